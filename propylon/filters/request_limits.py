"""The ``requestLimits`` policy: maximum request body size (413) and header size (431).

The body limit is checked on ``Content-Length`` when the head arrives. A chunked body has no
length up front; filters do not see body chunks yet, so a chunked request is refused with 411
when a body limit is set (documented in docs/policies.md). The header size counts every field
as ``name: value\\r\\n``.
"""

from __future__ import annotations

from typing import Any

from propylon.filters.base import Filter, FilterContext, FilterEnv, LocalResponse


class RequestLimitsFilter(Filter):
    policy_type = "requestLimits"

    __slots__ = ("length_required", "max_body", "max_header", "too_large", "too_long_headers")

    def __init__(self, source: str, max_body: int | None, max_header: int | None) -> None:
        super().__init__(source)
        self.max_body = max_body
        self.max_header = max_header
        self.too_large = LocalResponse(413, b"request body too large\n")
        self.too_long_headers = LocalResponse(431, b"request header fields too large\n")
        self.length_required = LocalResponse(411, b"length required\n")

    @classmethod
    def from_spec(cls, spec: dict[str, Any], source: str, env: FilterEnv) -> RequestLimitsFilter:
        return cls(source, spec.get("maxBodySize"), spec.get("maxHeaderSize"))

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
        if max_body is not None:
            if length is not None:
                if int(length) > max_body:
                    return self.too_large
            elif getattr(ctx, "req_chunked", False):  # the exchange's framing flag
                return self.length_required
        return None
