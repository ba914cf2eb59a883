"""The ``transform`` policy: request query edits, and request and response bodies edited by
JSON pointer or rewritten by a sandboxed Jinja2 template.

- ``request.query``: ``remove`` drops every parameter of those names, ``set`` replaces them
  (or appends them) with one ``name=value``; the other parameters keep their bytes and order.
- ``request.body`` / ``response.body``: the whole body is buffered (at most
  ``maxBodyBytes``: 413 for a request, 502 for a response above it) and handed over once.
  ``json`` edits (``remove`` first, then ``set``) apply to a JSON body (``application/json``
  or ``+json``) that parses; any other body passes untouched. A ``template`` always renders
  a new body from ``body`` (the parsed JSON, or None), ``text`` (the body as UTF-8),
  ``headers`` (lower-case names, repeated fields joined by ", "), ``query`` (first value of
  each name), ``path`` and ``method``; for a response also ``status`` and
  ``request_headers``. ``contentType`` replaces the Content-Type of a rendered body.
- A response body encoded with gzip, br or zstd (by the upstream, or by ``compression``,
  which sees the response first) is decoded, edited and encoded again with the same coding.
- The body's framing is rewritten by the session (its new Content-Length); a changed
  response's ETag is made weak. A template that fails at run time answers 500; the error is
  logged once per policy (the first time), not per request.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_plus

from jinja2 import Template

from propylon.filters._codings import DECODABLE, decode, encode
from propylon.filters._json_pointer import PointerError, remove_value, set_value, tokens
from propylon.filters.base import Filter, FilterContext, FilterEnv, Headers, LocalResponse
from propylon.policies.body import BodyTransform, TransformPolicy, compile_template

log = logging.getLogger("propylon.filters.transform")

_STATE_KEY = "transform"
_FAILED = LocalResponse(500, b"internal error\n")


def is_json(media: bytes | None) -> bool:
    if media is None:
        return False
    media = media.partition(b";")[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def header_map(headers: Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def query_map(query: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        out.setdefault(name, value)
    return out


def coding_of(headers: Headers) -> str | None:
    """The body's content coding (``identity`` when none); None when this gateway cannot
    decode it."""
    coding = next((v.strip().lower().decode("latin-1") for n, v in headers
                   if n == b"content-encoding"), "identity")
    return coding if coding == "identity" or coding in DECODABLE else None


class BodyEdit:
    """One side's compiled body transform."""

    __slots__ = ("content_type", "removals", "settings", "template")

    def __init__(self, spec: BodyTransform) -> None:
        self.template: Template | None = (
            compile_template(spec.template) if spec.template is not None else None)
        edits = spec.json_
        self.removals = tuple(tokens(p) for p in edits.remove) if edits else ()
        self.settings = tuple((tokens(p), v, p) for p, v in edits.set.items()) if edits else ()
        self.content_type = spec.content_type.encode("latin-1") if spec.content_type else None

    def applies(self, content_type: bytes | None) -> bool:
        return self.template is not None or is_json(content_type)

    def edit_json(self, body: bytes) -> bytes | None:
        """The edited document, or None when the body is not JSON (left untouched)."""
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        for path in self.removals:
            doc = remove_value(doc, path)
        for path, value, pointer in self.settings:
            doc = set_value(doc, path, value, pointer)
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    def render(self, body: bytes, content_type: bytes | None, context: dict[str, Any]) -> bytes:
        assert self.template is not None
        parsed = None
        if is_json(content_type):
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        text = body.decode("utf-8", "replace")
        return self.template.render(body=parsed, text=text, **context).encode()

    def apply(self, body: bytes, content_type: bytes | None,
              context: dict[str, Any]) -> bytes | None:
        """The new body; None: untouched."""
        if self.template is not None:
            return self.render(body, content_type, context)
        return self.edit_json(body)


class _FirstError:
    """Logs a policy's run-time failures the first time only (a broken template would
    otherwise log once per request)."""

    __slots__ = ("logged", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.logged = False

    def report(self, ctx: FilterContext, side: str, error: Exception) -> None:
        if self.logged:
            return
        self.logged = True
        route = getattr(ctx.route, "rule_label", None) or self.source
        log.error("transform %s failed on %s (%s): %s: %s (logged once)",
                  side, route, self.source, type(error).__name__, error)


class TransformFilter(Filter):
    policy_type = "transform"
    settings_model = TransformPolicy

    __slots__ = ("errors", "max_body", "query_remove", "query_set", "request_body",
                 "response_body")

    def __init__(self, source: str, settings: TransformPolicy) -> None:
        super().__init__(source)
        request, response = settings.request, settings.response
        query = request.query if request is not None else None
        self.query_remove = frozenset(query.remove) | frozenset(query.set) if query else None
        self.query_set = tuple(
            f"{quote(k, safe='')}={quote(v, safe='')}".encode() for k, v in query.set.items()
        ) if query else ()
        body = request.body if request is not None else None
        self.request_body = BodyEdit(body) if body is not None else None
        body = response.body if response is not None else None
        self.response_body = BodyEdit(body) if body is not None else None
        self.max_body = settings.max_body_bytes
        if self.request_body is not None:
            self.request_body_buffer = self.max_body
        if self.response_body is not None:
            self.response_body_buffer = self.max_body
        self.errors = _FirstError(source)

    @classmethod
    def from_spec(cls, settings: TransformPolicy, source: str, env: FilterEnv
                  ) -> TransformFilter:
        request, response = settings.request, settings.response
        on_request = request is not None and request.body is not None
        on_response = response is not None and response.body is not None
        kind = _KINDS[(on_request, on_response)]
        return kind(source, settings)

    # -- query -----------------------------------------------------------------------------
    def on_request(self, ctx: FilterContext) -> None:
        removed = self.query_remove
        if removed is None:
            return None
        kept = [p for p in ctx.query.split(b"&") if p and unquote_plus(
            p.partition(b"=")[0].decode("latin-1")) not in removed]
        ctx.query = b"&".join((*kept, *self.query_set))
        return None

    # -- shared by the body sides ------------------------------------------------------------
    def context(self, ctx: FilterContext) -> dict[str, Any]:
        return {
            "headers": header_map(ctx.request_headers),
            "query": query_map(ctx.query),
            "path": ctx.path.decode("latin-1"),
            "method": ctx.method.decode("latin-1"),
        }


class _RequestBody(TransformFilter):
    __slots__ = ()

    def on_request_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                        ) -> bytes | LocalResponse | None:
        edit = self.request_body
        assert edit is not None
        headers = ctx.request_headers
        content_type = next((v for n, v in headers if n == b"content-type"), None)
        encoded = any(n == b"content-encoding" for n, _ in headers)
        if encoded and edit.template is None:
            return None  # coded bytes are not JSON
        if not edit.applies(content_type):
            return None
        try:
            body = edit.apply(chunk, None if encoded else content_type, self.context(ctx))
        except Exception as exc:  # a template's run-time error, a pointer through a scalar
            self.errors.report(ctx, "request body", exc)
            return _FAILED
        if body is None:
            return None
        if edit.content_type is not None:
            ctx.request_headers = [
                *(h for h in headers if h[0] not in (b"content-type", b"content-encoding")),
                (b"content-type", edit.content_type)]
        elif encoded:
            ctx.request_headers = [h for h in headers if h[0] != b"content-encoding"]
        return body


class _ResponseBody(TransformFilter):
    __slots__ = ()

    def on_response(self, ctx: FilterContext, status: int, headers: Headers) -> None:
        edit = self.response_body
        assert edit is not None
        content_type = next((v for n, v in headers if n == b"content-type"), None)
        if coding_of(headers) is None or not edit.applies(content_type):
            return
        state = ctx.state
        if state is None:
            state = ctx.state = {}
        state[_STATE_KEY] = (status, headers, content_type)

    def on_response_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                         ) -> bytes | LocalResponse | None:
        state = ctx.state
        taken = state.pop(_STATE_KEY, None) if state is not None else None
        if taken is None:
            return None
        status, headers, content_type = taken
        edit = self.response_body
        assert edit is not None
        # read now: compression, which sees the response first, may have encoded it since
        coding = coding_of(headers)
        if coding is None:
            return None
        body = chunk
        if coding != "identity":
            try:
                body = decode(coding, chunk, self.max_body)
            except ValueError:
                return None  # corrupt or too large once decoded: passed on as it came
        context = self.context(ctx)
        context["request_headers"] = context["headers"]
        context["headers"] = header_map(headers)
        context["status"] = status
        try:
            out = edit.apply(body, content_type, context)
        except Exception as exc:
            self.errors.report(ctx, "response body", exc)
            return _FAILED
        if out is None:
            return None
        for index, (name, value) in enumerate(headers):
            if name == b"etag" and not value.startswith(b"W/"):
                headers[index] = (name, b"W/" + value)
        if edit.content_type is not None:
            headers[:] = [h for h in headers if h[0] != b"content-type"]
            headers.append((b"content-type", edit.content_type))
        return encode(coding, out) if coding != "identity" else out


class _BothBodies(_RequestBody, _ResponseBody):
    __slots__ = ()


_KINDS: dict[tuple[bool, bool], type[TransformFilter]] = {
    (False, False): TransformFilter,
    (True, False): _RequestBody,
    (False, True): _ResponseBody,
    (True, True): _BothBodies,
}

__all__ = ["PointerError", "TransformFilter"]
