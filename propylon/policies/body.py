"""Settings of the body policies: ``compression``, ``transform`` and ``cache`` (DESIGN §6,
names and behaviour in docs/policies.md). Sizes are written as integers (bytes) or with a
unit (``64KiB``, ``1MiB``, ``1GiB``; ``KB``/``MB``/``GB`` are powers of 1000)."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from propylon.policies.redis import RedisLogin
from propylon.schema import Duration, HeaderName, Model, OptionalLimit, invalid

if TYPE_CHECKING:  # Jinja2 loads when a template is first compiled
    from jinja2 import Template
    from jinja2.sandbox import ImmutableSandboxedEnvironment

_SIZE = re.compile(r"\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*")
_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
          "KB": 10**3, "MB": 10**6, "GB": 10**9}


def parse_size(value: Any) -> int:
    """Bytes from an integer or a string such as ``1MiB``."""
    if isinstance(value, bool):
        raise invalid("size", "a size is a number of bytes or a string such as 1MiB")
    if isinstance(value, int):
        if value < 0:
            raise invalid("size", "a size cannot be negative")
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise invalid("size", f"invalid size {value!r}: use bytes or a unit such as 64KiB, 1MiB")
    return int(match.group(1)) * _UNITS[match.group(2)]


Size = Annotated[int, BeforeValidator(parse_size)]

# -- compression ---------------------------------------------------------------------------
Coding = Literal["zstd", "br", "gzip"]
_CODINGS: tuple[Coding, ...] = ("zstd", "br", "gzip")

DEFAULT_CONTENT_TYPES = (
    "text/html", "text/plain", "text/css", "text/csv", "text/xml", "text/javascript",
    "text/markdown", "application/javascript", "application/json", "application/xml",
    "application/ld+json", "application/problem+json", "application/x-ndjson",
    "application/graphql-response+json", "application/wasm", "image/svg+xml",
)


def _check_media_range(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # pydantic's str validation reports it
    kind, _, sub = value.strip().lower().partition("/")
    if not kind or not sub or (kind == "*" and sub != "*") or any(c in value for c in " ;,"):
        raise invalid("media_type", f'invalid content type "{value}": use type/subtype or '
                      'type/* (no parameters)')
    return f"{kind}/{sub}"


MediaRange = Annotated[str, BeforeValidator(_check_media_range)]


class CompressionPolicy(Model):
    # the gateway's preference, first = best
    algorithms: list[Coding] = Field(default_factory=lambda: list(_CODINGS), min_length=1)
    min_bytes: int = Field(default=1024, ge=0)
    content_types: list[MediaRange] = Field(
        default_factory=lambda: list(DEFAULT_CONTENT_TYPES), min_length=1)


# -- transform -----------------------------------------------------------------------------
def _check_pointer(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # pydantic's str validation reports it
    if not value.startswith("/"):
        raise invalid("json_pointer", f'invalid JSON pointer "{value}": must start with "/" '
                      "(RFC 6901)")
    if re.search(r"~[^01]|~$", value):
        raise invalid("json_pointer", f'invalid JSON pointer "{value}": "~" must be followed '
                      'by 0 or 1')
    return value


JsonPointer = Annotated[str, BeforeValidator(_check_pointer)]


class JsonEdits(Model):
    set: dict[JsonPointer, Any] = Field(default_factory=dict)  # pointer -> JSON value
    remove: list[JsonPointer] = Field(default_factory=list)


@functools.cache
def template_environment() -> ImmutableSandboxedEnvironment:
    """The one Jinja2 environment of ``transform`` templates: sandboxed (no attribute of
    Python internals, no mutation of the values given), no autoescaping (bodies are not
    HTML), the context's ``body``, ``headers``, ``query``, ``path``, ``method``."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def compile_template(source: str) -> Template:
    """The compiled template; ``ValueError`` with the template's line for a syntax error,
    an unknown filter or test."""
    from jinja2 import TemplateError, TemplateSyntaxError

    try:
        return template_environment().from_string(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template line {exc.lineno}: {exc.message}") from None
    except TemplateError as exc:
        raise ValueError(f"template: {exc.message}") from None


def _check_template(value: str) -> str:
    try:
        compile_template(value)
    except ValueError as exc:
        raise invalid("template", str(exc)) from None
    return value


class BodyTransform(Model):
    """Exactly one of ``json`` (edits of a JSON body) or ``template`` (a new body)."""

    json_: JsonEdits | None = Field(default=None, alias="json")
    template: Annotated[str, AfterValidator(_check_template)] | None = None
    content_type: str | None = None  # of a template's output; default: kept

    @model_validator(mode="after")
    def _one(self) -> BodyTransform:
        if (self.json_ is None) == (self.template is None):
            raise invalid("exactly_one", "exactly one of json, template is required")
        if self.content_type is not None and self.template is None:
            raise invalid("content_type", "contentType goes with a template")
        return self


class QueryEdits(Model):
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class RequestTransform(Model):
    query: QueryEdits | None = None
    body: BodyTransform | None = None


class ResponseTransform(Model):
    body: BodyTransform | None = None


class TransformPolicy(Model):
    request: RequestTransform | None = None
    response: ResponseTransform | None = None
    max_body_bytes: Size = Field(default=1 << 20, ge=1)  # buffering cap: 413 / 502 above it

    @model_validator(mode="after")
    def _something(self) -> TransformPolicy:
        request, response = self.request, self.response
        if (request is None or (request.query is None and request.body is None)) and (
                response is None or response.body is None):
            raise invalid("transform", "transform needs request.query, request.body or "
                          "response.body")
        return self


# -- cache ---------------------------------------------------------------------------------
class CacheRedis(RedisLogin):
    address: str = "127.0.0.1:6379"
    timeout: Duration = 0.1  # bounds each store operation; a slow Redis is a miss
    prefix: str = "propylon:cache"


CacheMethod = Literal["GET", "HEAD"]
_CACHE_METHODS: tuple[CacheMethod, ...] = ("GET", "HEAD")


class CachePolicy(Model):
    store: Literal["memory", "redis"] = "memory"
    max_entry_bytes: Size = 1 << 20  # larger bodies are passed on, not stored
    max_bytes: Size = 256 << 20  # memory store: least recently used entries go first
    default_ttl: OptionalLimit = 0.0  # freshness of a storable answer that gives none; 0: none
    methods: list[CacheMethod] = Field(default_factory=lambda: list(_CACHE_METHODS),
                                       min_length=1)
    key_headers: list[HeaderName] = Field(default_factory=list)  # added to every key
    redis: CacheRedis = Field(default_factory=CacheRedis)  # store: redis
