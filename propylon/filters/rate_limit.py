"""The ``rateLimit`` policy: token buckets keyed by request descriptors.

Each limit is a bucket of ``burst`` tokens (default ``requests``) refilled at
``requests / per``; a request takes one token from the bucket of every limit, and is answered
``429`` when any of them is empty, with ``RateLimit-Limit``, ``RateLimit-Remaining``,
``RateLimit-Reset`` and ``Retry-After`` of the limit that refused it (of several that refused
it, the one with the longest wait).

A limit's ``key`` picks the bucket: a list of descriptors, ``client_ip``, ``consumer`` (the
name authenticated by an earlier auth policy, empty when anonymous), ``label:NAME`` (a
consumer label), ``header:NAME``, ``path`` and ``route`` (the rule id); an empty key is one
bucket for every request the policy sees. The bucket's identity is a hash of the policy's
source, the limit and the descriptor values, so it is the same in every worker, every proxy
and across reloads of an unchanged policy.

``local`` mode checks synchronously in the proxy's shared-memory table (``_buckets``);
``global`` mode asks Redis (one suspended round trip). When Redis is unavailable,
``failureMode: open`` lets requests through and ``closed`` answers ``503`` with
``Retry-After`` of the time a Redis that keeps failing is not asked (``Skipping``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from typing import Final

from propylon.filters._buckets import (
    MemoryBuckets,
    RedisBuckets,
    Result,
    SharedBuckets,
    ceil_seconds,
    open_local_buckets,
)
from propylon.filters._common import header, state
from propylon.filters._redis import Skipping
from propylon.filters.base import Filter, FilterContext, FilterEnv, Headers, LocalResponse
from propylon.policies.traffic import RateLimit, RateLimitPolicy

_HEADERS: Final = "rateLimit.headers"  # ctx.state key: headers for the response
KNOWN_BUCKETS: Final = 10_000  # bucket identities remembered per limit (then forgotten at once)


class Limit:
    """One limit, precomputed: how to build its key and its bucket's shape. The identities of
    the buckets it met are remembered by descriptor values, so a repeat client costs a dict
    lookup instead of a hash."""

    __slots__ = ("capacity", "descriptors", "known", "rate", "requests", "seed")

    def __init__(self, source: str, index: int, limit: RateLimit) -> None:
        self.requests = limit.requests
        per = limit.per
        self.capacity = float(limit.burst or self.requests)
        self.rate = self.requests / per
        self.descriptors = tuple(
            (kind, name.encode("latin-1"))
            for kind, _, name in (d.partition(":") for d in limit.key)
        )
        self.seed = f"{source}|{index}|{self.requests}/{per}|{self.capacity}".encode()
        self.known: dict[tuple[bytes, ...], tuple[bytes, int]] = {}

    def bucket(self, ctx: FilterContext) -> tuple[bytes, int]:
        """The bucket's identity: its digest (Redis keys) and the digest's first 8 bytes as
        an integer (the shared-memory table)."""
        descriptors = self.descriptors
        if len(descriptors) == 1:
            kind, name = descriptors[0]
            values: tuple[bytes, ...] = (_descriptor(ctx, kind, name),)
        else:
            values = tuple([_descriptor(ctx, kind, name) for kind, name in descriptors])
        known = self.known.get(values)
        if known is None:
            if len(self.known) >= KNOWN_BUCKETS:
                self.known.clear()
            digest = hashlib.blake2b(b"\0".join((self.seed, *values)), digest_size=16).digest()
            known = self.known[values] = (digest, int.from_bytes(digest[:8], "little"))
        return known


def _descriptor(ctx: FilterContext, kind: str, name: bytes) -> bytes:
    if kind == "client_ip":
        return ctx.client_ip.encode()
    if kind == "path":
        return ctx.path
    if kind == "header":
        return header(ctx.request_headers, name) or b""
    if kind == "route":
        route = getattr(ctx, "route", None)
        return str(getattr(route, "rule_id", "")).encode()
    consumer = ctx.consumer
    if consumer is None:
        return b""
    if kind == "consumer":
        return consumer.key.encode()
    return str(consumer.labels.get(name.decode("latin-1"), "")).encode()  # label:NAME


class RateLimitFilter(Filter):
    policy_type = "rateLimit"
    settings_model = RateLimitPolicy

    __slots__ = ("env", "fail_open", "limits", "local", "prefix", "redis", "unavailable")
    headers = False  # the response carries the tightest limit's state (``remember``)

    def __init__(self, source: str, settings: RateLimitPolicy, env: FilterEnv) -> None:
        super().__init__(source)
        self.limits = tuple(Limit(source, i, s) for i, s in enumerate(settings.limits))
        self.env = env
        self.local: SharedBuckets | MemoryBuckets | None = None
        self.redis: RedisBuckets | None = None
        self.fail_open = settings.failure_mode == "open"
        self.unavailable = LocalResponse(503, b"rate limit service unavailable\n", [
            (b"retry-after", str(ceil_seconds(Skipping.SKIP_SECONDS)).encode())])
        redis = settings.redis
        self.prefix = redis.prefix
        if settings.mode == "global":
            server = (redis.address, redis.cluster, redis.timeout, *redis.login())
            self.redis = env.shared(("redis-buckets", *server), lambda: RedisBuckets(*server))

    @classmethod
    def from_spec(cls, settings: RateLimitPolicy, source: str, env: FilterEnv
                  ) -> RateLimitFilter:
        if settings.response_headers:
            return _RateLimitWithHeaders(source, settings, env)
        return cls(source, settings, env)

    def on_request(
        self, ctx: FilterContext
    ) -> LocalResponse | Awaitable[LocalResponse | None] | None:
        redis = self.redis
        if redis is None:
            store = self.local
            if store is None:
                # attached on first use, in the worker (never in the supervisor or explain)
                store = self.local = self.env.shared(("local-buckets",), open_local_buckets)
            limits = self.limits
            if len(limits) == 1:
                limit = limits[0]
                result = store.take(limit.bucket(ctx)[1], limit.capacity, limit.rate)
                return self.decide(ctx, [result]) if self.headers or not result[0] else None
            return self.decide(ctx, [store.take(limit.bucket(ctx)[1], limit.capacity, limit.rate)
                                     for limit in limits])
        if not redis.available():
            return None if self.fail_open else self.unavailable
        return self._global(ctx, redis)

    async def _global(self, ctx: FilterContext, redis: RedisBuckets) -> LocalResponse | None:
        buckets = [(f"{self.prefix}:{{{limit.bucket(ctx)[0].hex()}}}", limit.capacity, limit.rate)
                   for limit in self.limits]
        results = await redis.take(buckets)
        if results is None:
            return None if self.fail_open else self.unavailable
        return self.decide(ctx, results)

    def decide(self, ctx: FilterContext, results: list[Result]) -> LocalResponse | None:
        for result in results:
            if not result[0]:
                return self.refuse(results)
        self.remember(ctx, results)
        return None

    def refuse(self, results: list[Result]) -> LocalResponse:
        """The 429 of the refusing limit with the longest wait: a client that honours
        ``Retry-After`` must not be refused again by another limit that refused it too."""
        refused: Limit | None = None
        longest = 0.0
        for limit, (allowed, _, wait) in zip(self.limits, results, strict=True):
            if not allowed and (refused is None or wait > longest):
                refused, longest = limit, wait
        assert refused is not None
        retry = str(ceil_seconds(longest)).encode()
        headers = [
            (b"ratelimit-limit", str(refused.requests).encode()),
            (b"ratelimit-remaining", b"0"),
            (b"ratelimit-reset", retry),
            (b"retry-after", retry),
        ]
        return LocalResponse(429, b"too many requests\n", headers)

    def remember(self, ctx: FilterContext, results: list[Result]) -> None:
        return None


class _RateLimitWithHeaders(RateLimitFilter):
    """``responseHeaders: true``: the tightest limit's state on every response."""

    __slots__ = ()
    headers = True

    def remember(self, ctx: FilterContext, results: list[Result]) -> None:
        index = min(range(len(results)), key=lambda i: results[i][1])
        limit, (_, tokens, _) = self.limits[index], results[index]
        reset = ceil_seconds((limit.capacity - tokens) / limit.rate)
        state(ctx)[_HEADERS] = [
            (b"ratelimit-limit", str(limit.requests).encode()),
            (b"ratelimit-remaining", str(int(tokens)).encode()),
            (b"ratelimit-reset", str(reset).encode()),
        ]

    def on_response(self, ctx: FilterContext, status: int, headers: Headers) -> None:
        data = ctx.state
        if data is not None:
            extra = data.get(_HEADERS)
            if extra:
                headers.extend(extra)
