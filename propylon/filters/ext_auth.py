"""The ``extAuth`` policy: ask an external HTTP service (Envoy ext_authz HTTP semantics).

The check request has the client's method and path (under the service URL's path), the
``headersToAuth`` the client sent, and ``x-forwarded-for`` with the client IP; no body. A 2xx
answer lets the request through and copies ``upstreamHeaders`` of the answer onto the upstream
request. Any other answer is returned to the client as is (status, body, ``clientHeaders``
and always ``WWW-Authenticate``). Client-sent fields named in ``upstreamHeaders`` never reach
the upstream (only the service's copies do, like ``jwt``'s ``claimsToHeaders``). If
the service cannot be reached or does not answer within ``timeout``, ``failOpen`` lets the
request through, otherwise the client gets ``statusOnError`` (403). An ``https`` service is
verified against ``caFile`` (or the system's CAs) with the URL's host as SNI; a refused
certificate or a failed handshake is "cannot be reached" too. Such failures are logged (at
most one line per service every ``_LOG_EVERY`` seconds, with the count of the others).

Decisions may be cached for ``cache.ttl`` keyed on every copy, in order, of the
``cache.keyHeaders`` (a request missing every key header is never cached). Calls go through
a pooled keep-alive client shared by all routes of the worker that call the same service.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from propylon.filters.base import Filter, FilterContext, FilterEnv, Headers, LocalResponse
from propylon.net.httpclient import HttpClient, HttpError
from propylon.net.tls import compile_tls
from propylon.policies.auth import ExtAuthPolicy

log = logging.getLogger("propylon.filters.ext_auth")
_LOG_EVERY = 10.0

# A decision: None = allowed (with upstream headers), or the answer for the client.
Decision = tuple[Headers | None, LocalResponse | None]
# A cache key: the copies of each key header, in order
CacheKey = tuple[tuple[bytes, ...], ...]


class ExtAuthFilter(Filter):
    policy_type = "extAuth"
    settings_model = ExtAuthPolicy

    __slots__ = (
        "cache", "cache_max", "cache_ttl", "client", "client_headers", "denied_on_error",
        "fail_open", "forward", "key_headers", "path_prefix", "timeout", "upstream_headers",
        "url",
    )

    def __init__(self, source: str, settings: ExtAuthPolicy, client: HttpClient) -> None:
        super().__init__(source)
        self.client = client
        self.url = settings.url
        self.path_prefix = urlsplit(settings.url).path.rstrip("/").encode()
        self.timeout = settings.timeout
        self.fail_open = settings.fail_open
        self.denied_on_error = LocalResponse(settings.status_on_error,
                                             b"authorization service unavailable\n")
        self.forward = frozenset(h.encode() for h in settings.headers_to_auth)
        self.upstream_headers = frozenset(h.encode() for h in settings.upstream_headers)
        # the auth service's challenge always reaches the client (RFC 9110 §11.6.1: a 401
        # carries WWW-Authenticate), whatever clientHeaders lists
        self.client_headers = frozenset(h.encode() for h in settings.client_headers) | {
            b"www-authenticate"}
        cache = settings.cache
        self.cache_ttl = cache.ttl if cache else 0.0
        self.cache_max = cache.max_entries if cache else 0
        self.key_headers = tuple(h.encode() for h in cache.key_headers) if cache else ()
        self.cache: dict[CacheKey, tuple[float, Decision]] = {}

    @classmethod
    def from_spec(cls, settings: ExtAuthPolicy, source: str, env: FilterEnv) -> ExtAuthFilter:
        parts = urlsplit(settings.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        limit, ca_file = settings.max_connections, settings.ca_file
        key = ("extAuth", origin, limit, ca_file)
        client = env.shared(key, lambda: HttpClient(origin, limit, compile_tls(
            origin, ca_file, f"{source}: extAuth.caFile")))
        return cls(source, settings, client)

    def on_request(self, ctx: FilterContext) -> Any:
        key = None
        if self.cache_ttl:
            key = self.cache_key(ctx.request_headers)
            if key is not None:
                hit = self.cache.get(key)
                if hit is not None and hit[0] > time.monotonic():
                    return self.apply(ctx, hit[1])
        return self.ask(ctx, key)

    def cache_key(self, headers: Headers) -> CacheKey | None:
        """Every copy of each key header, in order: the service is sent them all, so a
        decision is reused only for the very copies it decided on."""
        wanted = self.key_headers
        copies: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            if name in wanted:
                copies.setdefault(name, []).append(value)
        if not copies:
            return None
        return tuple(tuple(copies.get(name, ())) for name in wanted)

    async def ask(self, ctx: FilterContext, key: CacheKey | None) -> LocalResponse | None:
        forward = self.forward
        headers = [(n, v) for n, v in ctx.request_headers if n in forward]
        headers.append((b"x-forwarded-for", ctx.client_ip.encode()))
        headers.append((b"x-forwarded-host", ctx.host.encode("latin-1")))
        target = self.path_prefix + ctx.path + (b"?" + ctx.query if ctx.query else b"")
        try:
            response = await self.client.request(ctx.method, target, headers, self.timeout)
        except HttpError as exc:
            _log_failure(self.client, self.url, exc, self.fail_open)
            # let through (failOpen) as allowed without headers: the client's copies of the
            # upstreamHeaders names are dropped all the same
            return self.apply(ctx, ([], None)) if self.fail_open else self.denied_on_error
        if 200 <= response.status < 300:
            decision: Decision = (
                [(n, v) for n, v in response.headers if n in self.upstream_headers], None)
        else:
            passed = [(n, v) for n, v in response.headers if n in self.client_headers]
            ctype = response.header(b"content-type") or b"text/plain; charset=utf-8"
            decision = (None, LocalResponse(response.status, response.body, passed, ctype))
        if key is not None:
            if len(self.cache) >= self.cache_max:
                self.cache.clear()
            self.cache[key] = (time.monotonic() + self.cache_ttl, decision)
        return self.apply(ctx, decision)

    def apply(self, ctx: FilterContext, decision: Decision) -> LocalResponse | None:
        add, answer = decision
        if answer is not None:
            return answer
        names = self.upstream_headers
        if names:
            # client-sent copies of every upstreamHeaders name are dropped, also the ones the
            # answer did not set: the upstream trusts these names to come from the service
            headers = ctx.request_headers
            headers[:] = [h for h in headers if h[0] not in names]
            if add:
                headers.extend(add)
        return None


def _log_failure(client: HttpClient, url: str, exc: HttpError, fail_open: bool) -> None:
    """One warning per service (client) every ``_LOG_EVERY`` seconds at most."""
    now = time.monotonic()
    if now - client.last_report < _LOG_EVERY:
        client.unreported += 1
        return
    more = f" ({client.unreported} more since the last report)" if client.unreported else ""
    client.last_report, client.unreported = now, 0
    log.warning("extAuth service %s unavailable: %s; request %s%s", url, exc,
                "let through (failOpen)" if fail_open else "denied", more)
