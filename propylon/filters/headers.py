"""The ``headers`` policy: set, add and remove request and response header fields.

Spec: ``{request: {set: {name: value}, add: {name: value}, remove: [name]}, response: {...}}``.
Order within one side: remove, then set (replaces every existing field of that name), then add.
"""

from __future__ import annotations

from typing import Any

from propylon.filters.base import Filter, FilterContext, FilterEnv, Headers


class HeaderEdits:
    """One side's edits, pre-encoded; ``apply`` rewrites a header list in place."""

    __slots__ = ("additions", "dropped", "empty")

    def __init__(self, spec: dict[str, Any] | None) -> None:
        spec = spec or {}
        set_ = {k.lower(): v for k, v in (spec.get("set") or {}).items()}
        add = {k.lower(): v for k, v in (spec.get("add") or {}).items()}
        remove = [k.lower() for k in (spec.get("remove") or [])]
        self.dropped = frozenset(n.encode("latin-1") for n in [*remove, *set_])
        self.additions: tuple[tuple[bytes, bytes], ...] = tuple(
            (n.encode("latin-1"), str(v).encode("latin-1"))
            for n, v in [*set_.items(), *add.items()]
        )
        self.empty = not self.dropped and not self.additions

    def apply(self, headers: Headers) -> None:
        if self.dropped:
            dropped = self.dropped
            headers[:] = [h for h in headers if h[0] not in dropped]
        headers.extend(self.additions)


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
        if request.empty:
            return _ResponseOnlyHeadersFilter(source, request, response)
        if response.empty:
            return _RequestOnlyHeadersFilter(source, request, response)
        return cls(source, request, response)

    def on_upstream_request(self, ctx: FilterContext) -> None:
        self.request_edits.apply(ctx.request_headers)

    def on_response(self, ctx: FilterContext, status: int, headers: Headers) -> None:
        self.response_edits.apply(headers)


class _ResponseOnlyHeadersFilter(HeadersFilter):
    """Leaves ``on_upstream_request`` out of the request phases when there is nothing to do."""

    __slots__ = ()
    on_upstream_request = Filter.on_upstream_request


class _RequestOnlyHeadersFilter(HeadersFilter):
    __slots__ = ()
    on_response = Filter.on_response
