"""The ``requestLimits`` policy: maximum request body size (413) and header size (431).

The body limit is checked on ``Content-Length`` when the head arrives (413 before anything is
sent upstream) and, for chunked bodies whose size is unknown up front, on the bytes as they
stream (413 as soon as the limit is passed; the upstream request is abandoned and the
connection closed). The header size counts every field as ``name: value\\r\\n``.

The body is only counted, never changed (``body_inspect_only``): a request keeps its
``Content-Length`` framing upstream. Without ``maxBodySize`` the filter has no body phase at
all (``_HeaderLimitsFilter``), so the route's bodies do not go through the filter machinery.
"""

from __future__ import annotations

from propylon.filters.base import Filter, FilterContext, FilterEnv, LocalResponse
from propylon.policies.traffic import RequestLimitsPolicy


class _HeaderLimitsFilter(Filter):
    """The checks on the request head (header size, declared Content-Length); no body phase."""

    policy_type = "requestLimits"
    settings_model = RequestLimitsPolicy

    __slots__ = ("max_body", "max_header", "too_large", "too_long_headers")

    def __init__(self, source: str, max_body: int | None, max_header: int | None) -> None:
        super().__init__(source)
        self.max_body = max_body
        self.max_header = max_header
        self.too_large = LocalResponse(413, b"request body too large\n")
        self.too_long_headers = LocalResponse(431, b"request header fields too large\n")
        self.body_inspect_only = True  # bodies are counted, never rewritten

    @classmethod
    def from_spec(cls, settings: RequestLimitsPolicy, source: str, env: FilterEnv
                  ) -> _HeaderLimitsFilter:
        if settings.max_body_size is None:
            return _HeaderLimitsFilter(source, None, settings.max_header_size)
        return cls(source, settings.max_body_size, settings.max_header_size)

    def on_request(self, ctx: FilterContext) -> LocalResponse | None:
        max_header = self.max_header
        max_body = self.max_body
        total = 0
        length: bytes | None = None
        for name, value in ctx.request_headers:
            total += len(name) + len(value) + 4
            if name == b"content-length":
                length = value
        if max_header is not None and total > max_header:
            return self.too_long_headers
        if max_body is not None and length is not None and int(length) > max_body:
            return self.too_large
        return None


class RequestLimitsFilter(_HeaderLimitsFilter):
    """With ``maxBodySize``: also counts the streamed body (chunked requests)."""

    __slots__ = ()

    def on_request_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                        ) -> LocalResponse | None:
        max_body = self.max_body
        if max_body is None:
            return None
        state = ctx.state
        if state is None:
            state = ctx.state = {}
        seen = state.get("body_bytes", 0) + len(chunk)
        state["body_bytes"] = seen
        return self.too_large if seen > max_body else None
