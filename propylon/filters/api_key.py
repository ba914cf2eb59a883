"""The ``apiKey`` policy: a Consumer's API key in a header or a query parameter.

The key is looked up by its SHA-256 digest in the snapshot's consumers (the configuration
never holds raw keys; an accepted key is remembered in the worker's memory, see
``ConsumerTable``), then removed from the request before it is forwarded. The consumer's name
and labels go upstream in ``consumerHeaders`` and into ``ctx.state`` for ``rateLimit`` keys.
A missing or unknown key is ``401`` with ``WWW-Authenticate: ApiKey``; a consumer the
policy's ``consumers`` restriction does not let through is ``403`` (``_consumer_acl``).

A request must carry exactly one copy of the key: two header fields, two query parameters
(names compared percent-decoded, so ``api%5Fkey`` is ``api_key``), or one of each, are
``401`` too, whatever the values. Checking one copy and forwarding (or stripping) the others
would leave the layers behind the gateway to pick their own copy (parameter pollution).
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from propylon.filters._common import ConsumerDirectory, ConsumerHeaders, trimmed, unauthorized
from propylon.filters._consumer_acl import ConsumerRestriction
from propylon.filters.base import Filter, FilterContext, FilterEnv, LocalResponse
from propylon.policies.auth import ApiKeyPolicy


class ApiKeyFilter(Filter):
    policy_type = "apiKey"
    settings_model = ApiKeyPolicy

    __slots__ = ("consumer_headers", "consumers", "denied", "duplicate", "header_name",
                 "query_name", "restriction")

    def __init__(
        self, source: str, consumers: ConsumerDirectory, header_name: str | None,
        query_name: str | None, consumer_headers: ConsumerHeaders,
        restriction: ConsumerRestriction | None = None,
    ) -> None:
        super().__init__(source)
        self.consumers = consumers  # read on each request: the worker's, as served
        self.restriction = restriction
        self.header_name = header_name.encode("latin-1") if header_name else None
        self.query_name = query_name.encode("latin-1") if query_name else None
        self.consumer_headers = consumer_headers
        where = f'header="{header_name}"' if header_name else f'query="{query_name}"'
        self.denied = unauthorized(f'ApiKey realm="propylon", {where}')
        self.duplicate = unauthorized(f'ApiKey realm="propylon", {where}',
                                      b"unauthorized: more than one API key\n")

    @classmethod
    def from_spec(cls, settings: ApiKeyPolicy, source: str, env: FilterEnv) -> ApiKeyFilter:
        return cls(
            source, ConsumerDirectory.of(env), settings.header, settings.query,
            ConsumerHeaders(settings.consumer_headers),
            ConsumerRestriction.of(settings.consumers),
        )

    def on_request(self, ctx: FilterContext) -> LocalResponse | None:
        keys = self._take_keys(ctx)
        if len(keys) != 1:
            return self.duplicate if keys else self.denied
        table = self.consumers.table
        assert table is not None  # prepared before any filter is built
        consumer = table.by_api_key(keys[0]) if keys[0] else None
        if consumer is None:
            return self.denied
        restriction = self.restriction
        if restriction is not None and not restriction.admits(consumer):
            return restriction.forbidden
        self.consumer_headers.identify(ctx, consumer)
        return None

    def _take_keys(self, ctx: FilterContext) -> list[bytes]:
        """Every copy of the key (header fields, then query parameters), each removed."""
        keys: list[bytes] = []
        name = self.header_name
        if name is not None:
            headers = ctx.request_headers
            at = -1
            for index, (field, value) in enumerate(headers):
                if field == name:
                    keys.append(trimmed(value))
                    at = index
            if len(keys) == 1:
                headers.pop(at)  # the usual case: one copy, removed without a new list
            elif keys:
                headers[:] = [h for h in headers if h[0] != name]
        if self.query_name is not None and ctx.query:
            keys += self._take_query_keys(ctx, self.query_name)
        return keys

    @staticmethod
    def _take_query_keys(ctx: FilterContext, name: bytes) -> list[bytes]:
        found: list[bytes] = []
        kept: list[bytes] = []
        for part in ctx.query.split(b"&"):
            raw_name, _, value = part.partition(b"=")
            if _decoded(raw_name) == name:
                found.append(_decoded(value))
            else:
                kept.append(part)
        if found:
            ctx.query = b"&".join(kept)
        return found


def _decoded(raw: bytes) -> bytes:
    """A query component as a server decodes it (``+`` is a space, then ``%XX``)."""
    if b"%" in raw or b"+" in raw:
        return unquote_to_bytes(raw.replace(b"+", b" "))
    return raw
