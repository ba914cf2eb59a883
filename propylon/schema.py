"""Shared building blocks of the declarative models: the base model and checked scalar types.

The resource models (``propylon.config``) and the policy settings models
(``propylon.policies``) are both built from these; this module imports neither, so filters can
use their settings models without loading the configuration package.

All models forbid unknown fields, are frozen, and read camelCase YAML names into snake_case
attributes (``statusCode`` -> ``status_code``). Validators raise ``PydanticCustomError`` so the
message reaches the user without pydantic's "Value error, " prefix.

A model validated once and dumped with ``model_dump(mode="json", by_alias=True)`` (a policy
section in the IR) validates again under ``context=IR_CONTEXT``: durations are float seconds
there rather than strings. Without that context a number is not a duration, as in YAML.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# a Kubernetes object's name, as the API server checks it: an RFC 1123 DNS subdomain
# (dot-separated DNS labels, at most 253: "api.v1-route"); a Gateway API SectionName is one
OBJECT_NAME = re.compile(rf"{_DNS_LABEL.pattern}(\.{_DNS_LABEL.pattern})*")
MAX_OBJECT_NAME = 253
_HOST_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.IGNORECASE)
# RFC 9110 token characters: what a header name may contain.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_HINT = "a duration is a string like 250ms, 5s, 1m or 1h"


def parse_duration(value: object, allow_zero: bool = False) -> float:
    """Seconds in ``value``; raises ``ValueError`` with a readable message otherwise.
    ``allow_zero`` accepts ``0s`` (for settings where zero means "off")."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
    return _seconds_of(value, allow_zero)


@functools.lru_cache(maxsize=1024)  # a configuration repeats a few durations (10,000 "5s")
def _seconds_of(value: str, allow_zero: bool) -> float:
    pos, total = 0, 0.0
    while pos < len(value):
        part = _DURATION_PART.match(value, pos)
        if part is None:
            raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        pos = part.end()
    if total < 0 or (total == 0 and not allow_zero):
        raise ValueError(f"invalid duration {value!r}: must be greater than 0")
    return round(total, 6)


# Validation context of JSON data dumped from a validated model (see the module doc).
IR_CONTEXT: dict[str, Any] = {"dumped": True}


def _dumped(info: ValidationInfo) -> bool:
    context = info.context
    return isinstance(context, dict) and context.get("dumped") is True


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        coerce_numbers_to_str=True,
    )


def invalid(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def not_supported(name: str) -> PydanticCustomError:
    return PydanticCustomError("not_supported", f'"{name}" is not supported yet')


def exactly_one(model: BaseModel, names: tuple[str, ...]) -> None:
    """Raise unless exactly one of the (aliased) fields ``names`` is set on ``model``."""
    count = 0  # asked of every rule and path match: the valid case without a list
    fields = model.__dict__
    for attribute in _ATTRIBUTES.get(names) or _attributes(names):
        if fields[attribute] is not None:
            count += 1
    if count == 1:
        return
    given = [n for n in names if getattr(model, _snake(n)) is not None]
    if len(given) != 1:
        choices = ", ".join(names)
        found = f" (found {', '.join(given)})" if given else ""
        raise invalid("exactly_one", f"exactly one of {choices} is required{found}")


@functools.cache  # a handful of names, asked for on every validated rule and match
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _attributes(names: tuple[str, ...]) -> tuple[str, ...]:
    attributes = _ATTRIBUTES[names] = tuple(_snake(name) for name in names)
    return attributes


_ATTRIBUTES: dict[tuple[str, ...], tuple[str, ...]] = {}  # a handful of tuples of names


def _check_name(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise invalid(
            "name", f'invalid name "{value}": lower-case letters, digits and "-", at most 63'
        )
    return value


def is_object_name(value: str) -> bool:
    """Whether ``value`` is a name Kubernetes gives an object (a DNS subdomain)."""
    return len(value) <= MAX_OBJECT_NAME and OBJECT_NAME.fullmatch(value) is not None


def check_object_name(value: str, subject: str, note: str = "") -> str:
    """``value`` if it is a Kubernetes object name (``is_object_name``), else the error
    saying so: ``invalid name "…": {subject} a DNS subdomain: …{note}``."""
    if not is_object_name(value):
        raise invalid("name", f'invalid name "{value}": {subject} a DNS subdomain: lower-case '
                      'letters, digits, "-" and ".", each part between dots beginning and '
                      f'ending with a letter or digit, at most {MAX_OBJECT_NAME}{note}')
    return value


def _check_target_name(value: str) -> str:
    return check_object_name(value, "a target is named as Kubernetes names objects,",
                             " (every propylon.dev/v1 name is one)")


def _check_hostname(value: str) -> str:
    host = value.lower()
    labels = host[2:].split(".") if host.startswith("*.") else host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise invalid("hostname", f'invalid hostname "{value}": use "example.com" or "*.suffix"')
    return host


def _check_header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise invalid("header_name", f'invalid header name "{value}"')
    return value.lower()


def _check_header_value(value: str) -> str:
    if any(ch in value for ch in "\r\n\0"):
        raise invalid("header_value", "header values may not contain CR, LF or NUL")
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise invalid("path", f'invalid path "{value}": must start with "/"')
    return value


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise invalid("ip", f'invalid IP address "{value}"') from None


def _check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise invalid("cidr", f'invalid CIDR "{value}"') from None


def _check_method(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise invalid("method", f'invalid HTTP method "{value}"')
    return value.upper()


def _seconds(value: Any, info: ValidationInfo) -> float | None:
    """A dumped duration (float seconds), under ``IR_CONTEXT`` only."""
    if _dumped(info) and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _to_duration(value: Any, info: ValidationInfo) -> float:
    seconds = _seconds(value, info)
    if seconds is not None:
        return seconds
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise invalid("duration", str(exc)) from None


def _to_limit(value: Any, info: ValidationInfo) -> float:
    seconds = _seconds(value, info)
    if seconds is not None:
        return seconds
    try:
        return parse_duration(value, allow_zero=True)
    except ValueError as exc:
        raise invalid("duration", str(exc)) from None


Name = Annotated[str, AfterValidator(_check_name)]
# what a Policy's targetRef names: a propylon.dev/v1 name, or the Kubernetes name a converted
# Gateway, Route or rule keeps (config/gatewayapi.py), such as "api.v1-route"
TargetName = Annotated[str, AfterValidator(_check_target_name)]
Hostname = Annotated[str, AfterValidator(_check_hostname)]
HeaderName = Annotated[str, AfterValidator(_check_header_name)]
HeaderValue = Annotated[str, AfterValidator(_check_header_value)]
UrlPath = Annotated[str, AfterValidator(_check_path)]
IPAddress = Annotated[str, AfterValidator(_check_ip)]
CIDR = Annotated[str, AfterValidator(_check_cidr)]
Method = Annotated[str, AfterValidator(_check_method)]
Duration = Annotated[float, BeforeValidator(_to_duration)]
# A duration where 0s means "no limit".
OptionalLimit = Annotated[float, BeforeValidator(_to_limit)]
Port = Annotated[int, Field(ge=1, le=65535)]
Weight = Annotated[int, Field(ge=0, le=1000)]
StatusCode = Annotated[int, Field(ge=100, le=599)]
Labels = dict[str, str]


class Selector(Model):
    """Chooses resources: ``namespaces`` (``["*"]`` = all; omitted = the selecting resource's
    own namespace) and ``matchLabels`` (all must match)."""

    namespaces: list[str] | None = None
    match_labels: Labels = Field(default_factory=dict)


# Sections validated once per load: while ``shared_sections()`` is open, a section marked
# ``shared(kind)`` given the same value again is the model validated the first time.
_shared: dict[tuple[str, str], Any] | None = None


@contextlib.contextmanager
def shared_sections() -> Iterator[None]:
    """Within it, a section marked ``shared`` (a rule's ``forward``, a policy item) met again
    with the same value is the same model: a large configuration repeats them (one upstream
    and timeout, one policy on many rules), and models are frozen, never changed. The memo
    lasts for the outermost use (a load) and holds valid sections only."""
    global _shared
    if _shared is not None:
        yield
        return
    _shared = {}
    try:
        yield
    finally:
        _shared = None


def shared(kind: str) -> WrapValidator:
    """The validator that makes a ``kind`` section shared (see ``shared_sections``). Its
    key is the value's ``repr``: the parsed data are plain dicts, lists and scalars, whose
    repr tells types apart (``1``, ``1.0``, ``True``, ``'1'``)."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler,
                 info: ValidationInfo) -> Any:
        memo = _shared
        if (memo is None or type(value) is not dict or info.context is not None
                or info.mode != "python"):
            return handler(value)
        key = (kind, repr(value))
        made = memo.get(key)
        if made is None:
            made = memo[key] = handler(value)
        return made

    return WrapValidator(validate)


# Tags of tagged unions (a plain value or a mapping); they never appear in error locations.
UNION_TAGS = frozenset({"<plain>", "<mapping>"})


def plain_or_mapping(value: Any) -> str:
    """The tag of a value in a union of a scalar type and a model (see ``UNION_TAGS``)."""
    return "<mapping>" if isinstance(value, dict | BaseModel) else "<plain>"


class SecretRef(Model):
    """Where a secret lives: a file or an environment variable. Never the secret itself."""

    file: str | None = Field(default=None, min_length=1)
    env: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        exactly_one(self, ("file", "env"))
        return self


class SecretValue(Model):
    """A value read from a secret, e.g. a Redis password. Written ``{secretRef: {file|env}}``
    (never the value itself); translation reads it, so the IR's form, validated under
    ``IR_CONTEXT``, carries the value (``{secret}``, a ``SecretStr``: out of reprs and logs)
    or why it could not be read (``{secretError}``)."""

    secret_ref: SecretRef | None = None
    secret: SecretStr | None = None
    secret_error: str | None = None

    @model_validator(mode="after")
    def _form(self, info: ValidationInfo) -> SecretValue:
        if not _dumped(info):
            if self.secret_ref is None or self.secret is not None or (
                    self.secret_error is not None):
                raise invalid("secret_ref", "a secret is given as secretRef: {file: PATH} "
                              "or {env: NAME}, never inline")
        elif self.secret_ref is not None or (self.secret is None) == (
                self.secret_error is None):
            raise invalid("exactly_one", "exactly one of secret, secretError is required")
        return self

    def value(self) -> str | None:
        """The secret read at translation; None if it could not be read."""
        return self.secret.get_secret_value() if self.secret is not None else None
