"""The ``apiKey`` policy: a Consumer's API key in a header or a query parameter.

The key is looked up by its SHA-256 digest in the snapshot's consumers (raw keys are never
kept), then removed from the request before it is forwarded. The consumer's name and labels go
upstream in ``consumerHeaders`` and into ``ctx.state`` for ``rateLimit`` keys. A missing or
unknown key is ``401`` with ``WWW-Authenticate: ApiKey``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from propylon.filters._common import ConsumerHeaders, ConsumerTable, header, unauthorized
from propylon.filters.base import Filter, FilterContext, FilterEnv, LocalResponse


class ApiKeyFilter(Filter):
    policy_type = "apiKey"

    __slots__ = ("consumer_headers", "denied", "header_name", "query_name", "table")

    def __init__(
        self, source: str, table: ConsumerTable, header_name: str | None,
        query_name: str | None, consumer_headers: ConsumerHeaders,
    ) -> None:
        super().__init__(source)
        self.table = table
        self.header_name = header_name.encode("latin-1") if header_name else None
        self.query_name = query_name.encode("latin-1") if query_name else None
        self.consumer_headers = consumer_headers
        where = f'header="{header_name}"' if header_name else f'query="{query_name}"'
        self.denied = unauthorized(f'ApiKey realm="propylon", {where}')

    @classmethod
    def from_spec(cls, spec: dict[str, Any], source: str, env: FilterEnv) -> ApiKeyFilter:
        return cls(
            source, ConsumerTable.of(env), spec.get("header"), spec.get("query"),
            ConsumerHeaders(spec.get("consumerHeaders")),
        )

    def on_request(self, ctx: FilterContext) -> LocalResponse | None:
        key = self._take_key(ctx)
        consumer = self.table.by_api_key(key) if key else None
        if consumer is None:
            return self.denied
        self.consumer_headers.identify(ctx, consumer)
        return None

    def _take_key(self, ctx: FilterContext) -> bytes | None:
        name = self.header_name
        if name is not None:
            key = header(ctx.request_headers, name)
            if key is not None:
                ctx.request_headers[:] = [h for h in ctx.request_headers if h[0] != name]
                return key.strip()
        if self.query_name is not None and ctx.query:
            return self._take_query_key(ctx, self.query_name)
        return None

    @staticmethod
    def _take_query_key(ctx: FilterContext, name: bytes) -> bytes | None:
        prefix = name + b"="
        found: bytes | None = None
        kept: list[bytes] = []
        for part in ctx.query.split(b"&"):
            if part.startswith(prefix) and found is None:
                found = unquote_to_bytes(part[len(prefix):].replace(b"+", b" "))
            else:
                kept.append(part)
        if found is not None:
            ctx.query = b"&".join(kept)
        return found
