"""The ``headers`` policy: set, add and remove request and response header fields.

Spec: ``{request: {set: {name: value}, add: {name: value}, remove: [name]}, response: {...}}``.
Order within one side: remove, then set (replaces every existing field of that name), then add.
"""

from __future__ import annotations

from typing import Any

from propylon.filters.base import Filter, FilterContext, FilterEnv, Headers, LocalResponse


class HeaderEdits:
    """One side's edits, pre-encoded; ``apply`` rewrites a header list in place.

    A value may be a secret resolved at translation (``{"secret": value}``), or the reason it
    could not be read (``{"secretError": reason}``): then ``unavailable`` holds the reason
    and the filter answers 503 rather than send the request without its credential."""

    __slots__ = ("additions", "dropped", "empty", "unavailable")

    def __init__(self, spec: dict[str, Any] | None) -> None:
        spec = spec or {}
        set_ = {k.lower(): v for k, v in (spec.get("set") or {}).items()}
        add = {k.lower(): v for k, v in (spec.get("add") or {}).items()}
        remove = [k.lower() for k in (spec.get("remove") or [])]
        self.unavailable = next(
            (v["secretError"] for v in [*set_.values(), *add.values()]
             if isinstance(v, dict) and "secretError" in v),
            None,
        )
        self.dropped = frozenset(n.encode("latin-1") for n in [*remove, *set_])
        self.additions: tuple[tuple[bytes, bytes], ...] = tuple(
            (n.encode("latin-1"), _value(v))
            for n, v in [*set_.items(), *add.items()]
            if not (isinstance(v, dict) and "secretError" in v)
        )
        self.empty = not self.dropped and not self.additions and self.unavailable is None

    def apply(self, headers: Headers) -> None:
        if self.dropped:
            dropped = self.dropped
            headers[:] = [h for h in headers if h[0] not in dropped]
        headers.extend(self.additions)


def _value(value: Any) -> bytes:
    if isinstance(value, dict):
        return str(value["secret"]).encode("latin-1")
    return str(value).encode("latin-1")


class HeadersFilter(Filter):
    policy_type = "headers"

    __slots__ = ("request_edits", "response_edits")

    def __init__(self, source: str, request: HeaderEdits, response: HeaderEdits) -> None:
        super().__init__(source)
        self.request_edits = request
        self.response_edits = response

    @classmethod
    def from_spec(cls, spec: dict[str, Any], source: str, env: FilterEnv) -> HeadersFilter:
        request, response = HeaderEdits(spec.get("request")), HeaderEdits(spec.get("response"))
        if request.unavailable is not None:
            return _CredentialUnavailable(source, request, response)
        if request.empty:
            return _ResponseOnlyHeadersFilter(source, request, response)
        if response.empty:
            return _RequestOnlyHeadersFilter(source, request, response)
        return cls(source, request, response)

    def on_upstream_request(self, ctx: FilterContext) -> None:
        self.request_edits.apply(ctx.request_headers)

    def on_response(self, ctx: FilterContext, status: int, headers: Headers) -> None:
        self.response_edits.apply(headers)


class _CredentialUnavailable(HeadersFilter):
    """A request header's secret could not be read: refuse rather than forward without it."""

    __slots__ = ()

    def on_request(self, ctx: FilterContext) -> LocalResponse | None:
        return _UNAVAILABLE


_UNAVAILABLE = LocalResponse(503, b"upstream credential unavailable\n")


class _ResponseOnlyHeadersFilter(HeadersFilter):
    """Leaves ``on_upstream_request`` out of the request phases when there is nothing to do."""

    __slots__ = ()
    on_upstream_request = Filter.on_upstream_request


class _RequestOnlyHeadersFilter(HeadersFilter):
    __slots__ = ()
    on_response = Filter.on_response
