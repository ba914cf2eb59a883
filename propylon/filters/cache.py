"""The ``cache`` policy: an RFC 9111 shared cache in front of the upstream.

On the way in (``on_request``), for a method in ``methods`` (GET, and HEAD answered from the
GET entry): the entry of the request's key and variant (``_cache_store``) answers when it is
fresh (``x-propylon-cache: hit``, ``Age``; a matching ``If-None-Match`` /
``If-Modified-Since`` gets 304). A stale one is served at once while one background request
revalidates it when ``stale-while-revalidate`` allows (``stale``); otherwise the request waits
for that revalidation: a 304 freshens the entry and it answers (``hit``); a 5xx or no answer
within ``stale-if-error`` serves the stale entry (``stale``); anything else lets the request
go to the upstream (``miss``). A miss forwards the request; concurrent misses for the same key
in a worker wait for the first one's answer instead of going upstream too (collapsed
forwarding), unless that answer turns out not to be stored for their variant (then they go
at once). Other methods, ``Cache-Control: no-store`` requests and the cache's own
revalidations are ``bypass``; a 2xx/3xx answer to an unsafe method invalidates its target
URI and its same-host Location / Content-Location (RFC 9111 §4.4), in every worker. An answer
is a local answer: the policies after ``cache`` in the order (``compression``'s request side,
``faultInjection``) never see a hit.

On the way out, an answer the rules allow (``_cache_rules``) is kept as it leaves the cache's
place in the chain: after ``compression`` (which runs first on responses), so an encoded
variant is stored with its ``Vary: Accept-Encoding``, and without what the policies before
the cache and the session add later (they add it to each hit again); its body is watched,
never held back, and stored when it ends if it is within ``maxEntryBytes``.

Revalidation is a conditional GET (the entry's ETag / Last-Modified) sent by the worker to its
own listener, marked with the proxy's token (``x-propylon-cache-fetch``), so it takes the
route's own way to the upstream (rewrites, balancing, retries, TLS); its answer only freshens
or drops the entry (a changed answer is stored by the next miss). It needs a plain-HTTP
listener; behind an HTTPS-only listener a stale entry is a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urljoin, urlsplit

from propylon.filters._cache_rules import (
    NOT_MODIFIED_FIELDS,
    directives,
    field,
    format_date,
    initial_age,
    may_serve_stale,
    not_modified,
    seconds,
    storable,
    vary_names,
)
from propylon.filters._cache_store import (
    Entry,
    MemoryStore,
    PurgeLog,
    RedisStore,
    escape_key,
    variant_of,
)
from propylon.filters.base import Filter, FilterContext, FilterEnv, Headers, LocalResponse
from propylon.net.httpclient import HttpClient, HttpError
from propylon.policies.body import CachePolicy, CacheRedis

log = logging.getLogger("propylon.filters.cache")

CACHE_HEADER = b"x-propylon-cache"
MARKER = b"x-propylon-cache-fetch"
REVALIDATE_TIMEOUT = 10.0  # one revalidation request, head to end
COLLAPSE_TIMEOUT = 30.0  # how long a collapsed miss waits for the first one's answer
_STATE_KEY = "cache"
# never stored: framing, the cache's own fields, what is per answer
_NOT_STORED = frozenset((b"content-length", b"transfer-encoding", b"age", CACHE_HEADER,
                         b"connection", b"keep-alive", b"x-request-id"))
# what compression's on_response_framing still changes after the cache's on_response (it
# encodes: a new Content-Encoding, the ETag made weak, Accept-Ranges removed)
_FRAMING_FIELDS = frozenset((b"content-encoding", b"etag", b"accept-ranges"))
# RFC 9110 §9.2.1: an answer to any other method invalidates what is stored (RFC 9111 §4.4)
_SAFE_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE"))
# not copied into a revalidation request
_NOT_FORWARDED = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection",
                            b"keep-alive", b"te", b"upgrade", b"if-none-match", b"if-match",
                            b"if-modified-since", b"if-unmodified-since", b"if-range",
                            b"range", MARKER, b"expect"))


class CacheWorker:
    """What all cache policies of one worker share, across configuration versions: the
    memory stores (one per ``maxBytes``), Redis stores, the purge log, the misses in flight
    and the revalidations under way."""

    def __init__(self) -> None:
        self.memory: dict[int, MemoryStore] = {}
        self.redis: dict[tuple[Any, ...], RedisStore] = {}
        self.purges = PurgeLog()
        self.inflight: dict[str, _Inflight] = {}
        self.invalidating: dict[str, asyncio.Future[None]] = {}  # Redis deletions under way
        self.revalidating: set[str] = set()
        self.clients: dict[tuple[str, int, str], HttpClient] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    def memory_store(self, max_bytes: int) -> MemoryStore:
        store = self.memory.get(max_bytes)
        if store is None:
            store = self.memory[max_bytes] = MemoryStore(max_bytes)
        return store

    def redis_store(self, settings: CacheRedis) -> RedisStore:
        key = (settings.address, settings.prefix, settings.timeout, *settings.login())
        store = self.redis.get(key)
        if store is None:
            store = self.redis[key] = RedisStore(*key)
        return store

    def apply_purges(self) -> None:
        for rule in self.purges.pending():
            for store in self.memory.values():
                store.purge(rule)

    def invalidate_memory(self, uris: list[str]) -> None:
        """Every stored answer for these URIs (any variant, any ``keyHeaders`` values) goes,
        in this worker at once and in the others (through the purge log) before their next
        lookup, as an admin purge."""
        for uri in uris:
            rule = {"uri": uri}
            for store in self.memory.values():
                store.purge(rule)
            self.purges.append(rule)

    def client(self, address: str, port: int, host: str) -> HttpClient:
        key = (address, port, host)
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = HttpClient(f"http://{address}:{port}", 8, host=host)
        return client

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class _Inflight:
    """A GET miss on its way to the upstream, that other misses of its key wait for:
    ``head`` is resolved at its answer's head (with the ``Vary`` names it is being stored
    under, or None: it is not stored), ``done`` when it was stored (or not)."""

    __slots__ = ("done", "head", "variant")

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[tuple[str, ...] | None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.variant: tuple[tuple[str, str], ...] = ()  # the leader's, once head is set


class _Exchange:
    """One request's cache state (``ctx.state["cache"]``)."""

    __slots__ = ("chunks", "final", "headers", "key", "leader", "lifetime", "mode",
                 "request", "size", "status", "storing")

    def __init__(self, mode: bytes, key: str = "", leader: bool = False,
                 request: Headers | None = None) -> None:
        self.mode = mode  # miss, bypass, hit, stale (the value of x-propylon-cache)
        self.key = key
        self.leader = leader  # the miss others wait for
        self.request = request or []  # the request's fields as looked up (for Vary)
        self.storing = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.status = 0
        self.headers: Headers = []  # the answer's fields at the cache's place in the chain
        self.final: Headers = []  # the live list (compression may still encode the body)
        self.lifetime = 0.0


class CacheFilter(Filter):
    policy_type = "cache"
    settings_model = CachePolicy

    __slots__ = ("default_ttl", "key_headers", "max_entry", "memory", "methods", "redis",
                 "worker")

    def __init__(self, source: str, settings: CachePolicy, worker: CacheWorker) -> None:
        super().__init__(source)
        self.body_inspect_only = True
        self.worker = worker
        self.methods = frozenset(m.encode() for m in settings.methods)
        self.key_headers = tuple(h.encode("latin-1") for h in settings.key_headers)
        self.max_entry = settings.max_entry_bytes
        self.default_ttl = settings.default_ttl
        self.memory: MemoryStore | None = None
        self.redis: RedisStore | None = None
        if settings.store == "redis":
            self.redis = worker.redis_store(settings.redis)
        else:
            self.memory = worker.memory_store(settings.max_bytes)

    @classmethod
    def from_spec(cls, settings: CachePolicy, source: str, env: FilterEnv) -> CacheFilter:
        return cls(source, settings, env.shared(("cache-worker",), CacheWorker))

    # -- the way in ------------------------------------------------------------------------
    def on_request(self, ctx: FilterContext) -> Any:
        headers = ctx.request_headers
        marker = field(headers, MARKER)
        if marker is not None:
            ctx.request_headers = [h for h in headers if h[0] != MARKER]
            if marker == self.worker.purges.token:  # our own revalidation: straight through
                return self.start(ctx, _Exchange(b"bypass"))
        if ctx.method not in self.methods:
            return self.start(ctx, _Exchange(b"bypass"))
        request_cc = directives(headers)
        if "no-store" in request_cc:
            return self.start(ctx, _Exchange(b"bypass"))
        key = self.key_of(ctx)
        memory = self.memory
        if memory is not None:
            self.worker.apply_purges()
            return self.decide(ctx, key, memory.get(key, headers), request_cc)
        return self.lookup_then_decide(ctx, key, request_cc)

    def key_of(self, ctx: FilterContext) -> str:
        """``host`` + path + ``?query``, then ``|`` and each ``keyHeaders`` value; ``%`` and
        ``|`` inside them are written ``%25`` and ``%7C``, so two requests share a key only
        when every part is the same."""
        key = self.uri_of(ctx)
        if self.key_headers:
            values = variant_of(ctx.request_headers, tuple(
                h.decode("latin-1") for h in self.key_headers))
            key += "|" + "|".join(escape_key(v) for _, v in values)
        return key

    @staticmethod
    def uri_of(ctx: FilterContext) -> str:
        """The key's first part, without the ``keyHeaders`` values."""
        path = ctx.path.decode("latin-1")
        uri = f"{ctx.host}{path}?{ctx.query.decode('latin-1')}" if ctx.query else (
            f"{ctx.host}{path}")
        return escape_key(uri)

    async def lookup(self, key: str, request: Headers) -> Entry | None:
        if self.memory is not None:
            return self.memory.get(key, request)
        assert self.redis is not None
        return await self.redis.get(key, request)

    async def lookup_then_decide(self, ctx: FilterContext, key: str,
                                 request_cc: dict[str, str]) -> LocalResponse | None:
        invalidating = self.worker.invalidating.get(key.partition("|")[0])
        if invalidating is not None:  # an unsafe method's answer just invalidated it
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(invalidating), REVALIDATE_TIMEOUT)
        entry = await self.lookup(key, ctx.request_headers)
        answer = self.decide(ctx, key, entry, request_cc)
        if answer is None or isinstance(answer, LocalResponse):
            return answer
        return await answer

    def decide(self, ctx: FilterContext, key: str, entry: Entry | None,
               request_cc: dict[str, str]) -> Any:
        no_cache = "no-cache" in request_cc or (
            b"no-cache" in (field(ctx.request_headers, b"pragma") or b""))
        if entry is None or no_cache:
            return self.miss(ctx, key)
        now = time.time()
        age = entry.age(now)
        if age < entry.lifetime:
            return self.answer(ctx, entry, age, b"hit")
        late = age - entry.lifetime
        if late < entry.stale_while_revalidate:
            if key not in self.worker.revalidating:
                self.worker.revalidating.add(key)
                self.worker.spawn(self.revalidate_later(ctx, key, entry))
            return self.answer(ctx, entry, age, b"stale")
        return self.revalidate_now(ctx, key, entry)

    def miss(self, ctx: FilterContext, key: str) -> Any:
        inflight = self.worker.inflight
        waiting = inflight.get(key)
        if waiting is not None:
            return self.follow(ctx, key, waiting)
        leader = ctx.method == b"GET"
        if leader:
            inflight[key] = _Inflight()
        return self.start(ctx, _Exchange(b"miss", key, leader, list(ctx.request_headers)))

    async def follow(self, ctx: FilterContext, key: str, leader: _Inflight
                     ) -> LocalResponse | None:
        """A collapsed miss: wait for the first request's answer head; when that answer is
        being stored for this request's variant, wait for its end and use the entry, else
        go on to the upstream at once (what the first one gets is of no use here)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(COLLAPSE_TIMEOUT):
                names = await asyncio.shield(leader.head)
                if names is not None and (
                        variant_of(ctx.request_headers, names) == leader.variant):
                    await asyncio.shield(leader.done)
        entry = await self.lookup(key, ctx.request_headers)
        if entry is not None and entry.age(time.time()) < entry.lifetime:
            return self.answer(ctx, entry, entry.age(time.time()), b"hit")
        return self.start(ctx, _Exchange(b"miss", key, request=list(ctx.request_headers)))

    def start(self, ctx: FilterContext, exchange: _Exchange) -> LocalResponse | None:
        """Go on to the upstream with ``exchange`` as this request's cache state."""
        state = ctx.state
        if state is None:
            state = ctx.state = {}
        state[_STATE_KEY] = exchange
        return None

    def answer(self, ctx: FilterContext, entry: Entry, age: float, how: bytes
               ) -> LocalResponse:
        state = ctx.state
        if state is None:
            state = ctx.state = {}
        state[_STATE_KEY] = _Exchange(how)
        own = [(b"age", b"%d" % int(age)), (CACHE_HEADER, how)]
        if not_modified(ctx.request_headers, entry.headers):
            kept = [h for h in entry.headers if h[0] in NOT_MODIFIED_FIELDS]
            return LocalResponse(304, b"", kept + own)
        content_type = field(entry.headers, b"content-type") or b"application/octet-stream"
        headers = [h for h in entry.headers if h[0] != b"content-type"]
        return LocalResponse(entry.status, entry.body, headers + own, content_type)

    # -- revalidation ----------------------------------------------------------------------
    async def revalidate_now(self, ctx: FilterContext, key: str, entry: Entry
                             ) -> LocalResponse | None:
        status = await self.revalidate(ctx, key, entry)
        now = time.time()
        fresh = await self.lookup(key, ctx.request_headers) if status == 304 else None
        if fresh is not None and fresh.age(now) < fresh.lifetime:
            return self.answer(ctx, fresh, fresh.age(now), b"hit")
        failed = status is not None and (status == 0 or status >= 500)
        if failed and entry.age(now) - entry.lifetime < entry.stale_if_error:
            return self.answer(ctx, entry, entry.age(now), b"stale")
        return self.miss(ctx, key)

    async def revalidate_later(self, ctx: FilterContext, key: str, entry: Entry) -> None:
        try:
            await self.revalidate(ctx, key, entry)
        finally:
            self.worker.revalidating.discard(key)

    async def revalidate(self, ctx: FilterContext, key: str, entry: Entry) -> int | None:
        """Ask the upstream, through this gateway, whether ``entry`` is still good; the
        answer's status (0: no answer; None: no way to ask). A 304 freshens the entry, any
        other answer but a failure drops it."""
        listener = getattr(getattr(ctx, "proto", None), "listener", None)
        if listener is None or getattr(listener, "scheme", b"") != b"http":
            return None
        address = listener.address if listener.address not in ("0.0.0.0", "", "::") else (
            "127.0.0.1")
        client = self.worker.client(address, listener.port, ctx.host)
        headers = [h for h in ctx.request_headers if h[0] not in _NOT_FORWARDED]
        etag = field(entry.headers, b"etag")
        if etag is not None:
            headers.append((b"if-none-match", etag))
        last_modified = field(entry.headers, b"last-modified")
        if last_modified is not None:
            headers.append((b"if-modified-since", last_modified))
        headers.append((MARKER, self.worker.purges.token))
        target = ctx.path + (b"?" + ctx.query if ctx.query else b"")
        try:
            response = await client.request(b"GET", target, headers, REVALIDATE_TIMEOUT)
        except HttpError as exc:
            log.info("cache revalidation of %s failed: %s", key, exc)
            return 0
        if response.status == 304:
            await self.freshen(entry, response.headers)
        elif response.status < 500:
            await self.drop(entry)
        return response.status

    async def freshen(self, entry: Entry, headers: Headers) -> None:
        """RFC 9111 §4.3.4: the stored fields a 304 carries are replaced, its age restarts."""
        updated = {name for name, _ in headers if name in NOT_MODIFIED_FIELDS}
        merged = [h for h in entry.headers if h[0] not in updated]
        merged += [h for h in headers if h[0] in NOT_MODIFIED_FIELDS]
        response_cc = directives(merged)
        life = storable(entry.status, [], {}, merged, response_cc, self.default_ttl)
        if life is None:
            await self.drop(entry)
            return
        now = time.time()
        fresh = Entry(entry.key, entry.vary, entry.status, merged, entry.body, now,
                      initial_age(headers, now), life, *self.stale_windows(response_cc),
                      entry.tags)
        await self.put(fresh)

    async def drop(self, entry: Entry) -> None:
        """That entry only: its key and variant."""
        if self.memory is not None:
            self.memory.remove((entry.key, entry.vary))
        elif self.redis is not None:
            await self.redis.remove(entry.key, entry.vary)

    # -- the way out -----------------------------------------------------------------------
    def on_response(self, ctx: FilterContext, status: int, headers: Headers) -> None:
        state = ctx.state
        exchange = state.get(_STATE_KEY) if state is not None else None
        if not isinstance(exchange, _Exchange) or exchange.mode in (b"hit", b"stale"):
            return
        headers.append((CACHE_HEADER, exchange.mode))
        if ctx.method not in _SAFE_METHODS:
            if 200 <= status < 400:
                self.invalidate(ctx, headers)
            return
        if exchange.mode != b"miss" or ctx.method != b"GET":
            return
        request_cc = directives(ctx.request_headers)
        response_cc = directives(headers)
        life = storable(status, ctx.request_headers, request_cc, headers, response_cc,
                        self.default_ttl)
        if life is None:  # the misses waiting for this one go on at once (hit-for-pass)
            release(self.take_leader(exchange))
            return
        exchange.storing = True
        exchange.status = status
        # what later policies and the session add (cors, rateLimit, headers, x-request-id)
        # they add again to each hit: only the fields as they are here are stored
        exchange.headers = list(headers)
        exchange.final = headers  # compression's framing may still encode the body
        exchange.lifetime = life
        flight = self.worker.inflight.get(exchange.key) if exchange.leader else None
        if flight is not None and not flight.head.done():
            names = vary_names(headers) or ()
            flight.variant = variant_of(exchange.request, names)
            flight.head.set_result(names)  # other variants need not wait for this body

    def invalidate(self, ctx: FilterContext, headers: Headers) -> None:
        """RFC 9111 §4.4: a non-error answer to an unsafe method drops what is stored for
        its target URI, and for the URIs of its Location and Content-Location on the same
        host: every variant, every ``keyHeaders`` value."""
        uris = [self.uri_of(ctx)]
        for name, value in headers:
            if name in (b"location", b"content-location"):
                uri = self.same_host_uri(ctx, value)
                if uri is not None and uri not in uris:
                    uris.append(uri)
        if self.memory is not None:
            self.worker.invalidate_memory(uris)
            return
        assert self.redis is not None
        pending = self.worker.invalidating
        for uri in uris:
            done = asyncio.get_running_loop().create_future()
            pending[uri] = done
            self.worker.spawn(self.invalidate_redis(uri, done))

    async def invalidate_redis(self, uri: str, done: asyncio.Future[None]) -> None:
        assert self.redis is not None
        try:
            await self.redis.invalidate(uri)
        finally:
            release(done)
            if self.worker.invalidating.get(uri) is done:
                del self.worker.invalidating[uri]

    @staticmethod
    def same_host_uri(ctx: FilterContext, value: bytes) -> str | None:
        """The key's first part for a Location / Content-Location value, when it names a
        resource of the request's host (None otherwise)."""
        base = ctx.path.decode("latin-1")
        try:
            target = urlsplit(urljoin(f"http://{ctx.host}{base}",
                                      value.decode("latin-1").strip()))
            host = target.hostname
        except ValueError:
            return None
        if host is None or host != ctx.host.lower() or target.scheme not in ("http", "https"):
            return None
        path = target.path or "/"
        uri = f"{ctx.host}{path}?{target.query}" if target.query else f"{ctx.host}{path}"
        return escape_key(uri)

    def on_response_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool) -> None:
        state = ctx.state
        exchange = state.get(_STATE_KEY) if state is not None else None
        if not isinstance(exchange, _Exchange) or not exchange.storing:
            return None
        if chunk:
            exchange.size += len(chunk)
            if exchange.size > self.max_entry:
                exchange.storing = False
                exchange.chunks = []
                release(self.take_leader(exchange))  # too large: not stored
                return None
            exchange.chunks.append(chunk)
        if end_stream:
            exchange.storing = False
            self.store(exchange, b"".join(exchange.chunks))
            exchange.chunks = []
        return None

    def store(self, exchange: _Exchange, body: bytes) -> None:
        headers = exchange.headers
        final = exchange.final
        coded = [v for n, v in headers if n == b"content-encoding"]
        if [v for n, v in final if n == b"content-encoding"] != coded:  # encoded after us
            headers = [h for h in headers if h[0] not in _FRAMING_FIELDS] + [
                h for h in final if h[0] in _FRAMING_FIELDS]
        exchange.final = []
        now = time.time()
        vary = tuple(sorted({item.strip().lower() for name, value in headers
                             if name == b"vary" for item in value.decode("latin-1").split(",")
                             if item.strip()}))
        kept = [h for h in headers if h[0] not in _NOT_STORED]
        response_cc = directives(headers)
        tags = tuple(t.strip() for name, value in headers if name == b"cache-tag"
                     for t in value.decode("latin-1").split(",") if t.strip())
        if field(kept, b"date") is None:
            kept.append((b"date", format_date(now)))
        entry = Entry(exchange.key, (), exchange.status, kept, body, now,
                      initial_age(headers, now), exchange.lifetime,
                      *self.stale_windows(response_cc), tags)
        entry.vary = variant_of(exchange.request, vary) if vary else ()
        waiting = self.take_leader(exchange)
        if self.memory is not None:
            self.memory.put(entry)
            release(waiting)
        else:
            self.worker.spawn(self.put_then_release(entry, waiting))

    async def put_then_release(self, entry: Entry, waiting: _Inflight | None) -> None:
        try:
            await self.put(entry)
        finally:
            release(waiting)

    async def put(self, entry: Entry) -> None:
        if self.memory is not None:
            self.memory.put(entry)
            return
        assert self.redis is not None
        keep = entry.lifetime + max(entry.stale_while_revalidate, entry.stale_if_error)
        await self.redis.put(entry, max(keep, 1.0) + 60.0)  # a stale entry still revalidates

    def take_leader(self, exchange: _Exchange) -> _Inflight | None:
        """What the misses collapsed into this one wait on, once (None for a follower)."""
        if not exchange.leader:
            return None
        exchange.leader = False
        return self.worker.inflight.pop(exchange.key, None)

    def on_log(self, ctx: FilterContext) -> None:
        state = ctx.state
        exchange = state.get(_STATE_KEY) if state is not None else None
        if isinstance(exchange, _Exchange):  # not stored (or cut short): let them go on
            release(self.take_leader(exchange))

    @staticmethod
    def stale_windows(response_cc: dict[str, str]) -> tuple[float, float]:
        if not may_serve_stale(response_cc):
            return 0.0, 0.0
        return (seconds(response_cc.get("stale-while-revalidate")) or 0.0,
                seconds(response_cc.get("stale-if-error")) or 0.0)


def release(waiting: _Inflight | asyncio.Future[None] | None) -> None:
    """Wake the misses that waited for the first one's answer (or a deletion's end)."""
    if isinstance(waiting, _Inflight):
        if not waiting.head.done():
            waiting.head.set_result(None)
        waiting = waiting.done
    if waiting is not None and not waiting.done():
        waiting.set_result(None)
