"""Token buckets for ``rateLimit``: one table per proxy (shared memory), or Redis.

**Local mode: one table for all workers of one proxy.** Workers are spawned by the
supervisor, so ``os.getppid()`` names the proxy. The first worker that checks a limit creates
``/dev/shm/propylon-rl-<supervisor pid>-<its start time>`` (the start time makes a reused PID
a new name) and maps it; the others map the same file. The table is open addressing over
``SLOTS`` fixed slots of (fingerprint, tokens, last refill, full-again time); a check locks the
home slot's probe window with an ``fcntl`` byte-range lock (no lock files, no server), reads,
refills, takes and writes the bucket, and unlocks: two syscalls per check. A bucket with
plenty of tokens lends a worker several at once (a *lease*: at most 1/``LEASE_SHARE`` of
what is left, at most ``LEASE_MAX``, for ``LEASE_SECONDS``), which that worker then spends
without a syscall: the lock pair is paid about once per lease instead of on every request.
Leased tokens have left the bucket, so the limit is never exceeded; a lease not spent in
time expires with its tokens, which can only make the limit stricter, and by little: a
bucket with fewer than ``LEASE_SHARE`` tokens lends none (every check then takes its one
token under the lock, as exactly as without leases). A slot whose
bucket is full again is free for reuse, so the table never needs sweeping. Time is
``CLOCK_MONOTONIC``, one clock for every process of the machine. A segment whose supervisor is
gone is unlinked by the next proxy that creates its own (the supervisor itself does not know
about it). Without ``/dev/shm`` the table falls back to one per worker, with a warning, bounded
like the shared one (``MemoryBuckets``).

**Global mode: Redis.** One Lua script per bucket, run with EVALSHA (one round trip; several
limits go in one pipeline), refills and takes atomically using the server's clock (so proxy
clocks do not matter). Each key is a hash tag of its own (``prefix:{digest}``), so the script
touches one key and runs on Redis Cluster; there, several limits are concurrent EVALSHAs, each
to its key's node (redis-py blocks EVALSHA in cluster pipelines). The policy's
``redis.timeout`` bounds a whole check (connecting, learning a cluster's slots, loading the
script, every EVALSHA), not each socket operation: redis-py's default retry policy (10 tries
with exponential backoff, per command) would turn a 100 ms timeout into seconds of stall
when Redis hangs or is gone, so the client makes one immediate retry at most (a pooled
connection closed by a Redis restart) and ``asyncio.timeout`` cuts whatever is left. A check
that fails is answered by the failure mode; after failures in a row the store is skipped
between probes (``_redis.Skipping``, as the cache's Redis store is), its checks answered at
once by the failure mode, so a hung Redis does not cost every request its timeout, and one
slow answer under load does not put every check of the next second in failure mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import hashlib
import itertools
import logging
import math
import mmap
import os
import struct
import time
from typing import Any, Final

from propylon.filters._redis import Skipping, client_options, failure

log = logging.getLogger("propylon.filters.rateLimit")

SLOT: Final = struct.Struct("<Qddd")  # fingerprint, tokens, last refill, full again at
SLOTS: Final = 1 << 16
PROBE: Final = 8
SIZE: Final = (SLOTS + PROBE) * SLOT.size
SHM_DIR: Final = "/dev/shm"

# (allowed, tokens left, seconds until one token)
Result = tuple[bool, float, float]

LEASE_SHARE: Final = 16  # a lease takes at most this fraction (1/N) of the tokens left
LEASE_MAX: Final = 64
LEASE_SECONDS = 0.1
LEASES_MAX: Final = 4096  # leases a worker holds (one per busy bucket); expired ones are dropped


class Lease:
    """Tokens a worker took from a shared bucket in advance, spent without the lock."""

    __slots__ = ("left", "tokens", "until")

    def __init__(self, tokens: int, left: float, until: float) -> None:
        self.tokens = tokens  # still to spend
        self.left = left  # the bucket's tokens after the lease was taken (for the headers)
        self.until = until


def refill(tokens: float, last: float, now: float, capacity: float, rate: float) -> float:
    """A bucket's tokens at ``now``, given what it held at ``last``."""
    return min(capacity, tokens + (now - last) * rate)


def take(tokens: float, last: float, now: float, capacity: float, rate: float
         ) -> tuple[bool, float]:
    tokens = refill(tokens, last, now, capacity, rate)
    if tokens >= 1.0:
        return True, tokens - 1.0
    return False, tokens


def wait_for_token(tokens: float, rate: float) -> float:
    return max(0.0, (1.0 - tokens) / rate)


class MemoryBuckets:
    """One process's table (the fallback without ``/dev/shm``, and unit tests), of at most
    ``SLOTS`` buckets, as many as the shared table. When it is full, the buckets that are
    full again go first (forgetting one changes nothing), then, down to 7/8 of the bound,
    the least recently used: a client seen again starts with a full bucket, while the clients
    being limited, used most recently, are kept."""

    def __init__(self) -> None:
        # fingerprint -> (tokens, last refill, full again at), least recently used first
        self.buckets: dict[int, tuple[float, float, float]] = {}

    def take(self, fingerprint: int, capacity: float, rate: float) -> Result:
        now = time.monotonic()
        buckets = self.buckets
        known = buckets.pop(fingerprint, None)  # put back last: the most recently used
        if known is None:
            tokens, last = capacity, now
            if len(buckets) >= SLOTS:
                self._forget(now)
        else:
            tokens, last, _ = known
        allowed, tokens = take(tokens, last, now, capacity, rate)
        buckets[fingerprint] = (tokens, now, now + (capacity - tokens) / rate)
        return allowed, tokens, wait_for_token(tokens, rate)

    def _forget(self, now: float) -> None:
        buckets = self.buckets
        for key in [k for k, (_, _, full_at) in buckets.items() if full_at <= now]:
            del buckets[key]
        excess = len(buckets) - (SLOTS - SLOTS // 8)
        if excess > 0:
            for key in list(itertools.islice(buckets, excess)):
                del buckets[key]


class SharedBuckets:
    """The table in a shared-memory file, for every worker of one proxy."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self.fd).st_size < SIZE:
            os.ftruncate(self.fd, SIZE)  # zero-filled; growing to the same size is harmless
        self.map = mmap.mmap(self.fd, SIZE)
        self.leases: dict[int, Lease] = {}

    def take(self, fingerprint: int, capacity: float, rate: float) -> Result:
        fingerprint = fingerprint or 1  # 0 marks an empty slot
        lease = self.leases.get(fingerprint)
        if lease is not None and lease.tokens and time.monotonic() < lease.until:
            lease.tokens -= 1
            return True, lease.left + lease.tokens, 0.0
        start = (fingerprint % SLOTS) * SLOT.size
        window = PROBE * SLOT.size
        fcntl.lockf(self.fd, fcntl.LOCK_EX, window, start)
        try:
            return self._take_locked(start, fingerprint, capacity, rate)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, window, start)

    def _take_locked(self, start: int, fingerprint: int, capacity: float, rate: float
                     ) -> Result:
        now = time.monotonic()
        buf = self.map
        free = -1
        offset = start
        tokens, last = capacity, now
        for i in range(PROBE):
            off = start + i * SLOT.size
            fp, t, refilled, full_at = SLOT.unpack_from(buf, off)
            if fp == fingerprint:
                offset, tokens, last, free = off, t, refilled, -2
                break
            if free == -1 and (fp == 0 or full_at <= now):
                free = off
        if free >= 0:
            offset = free
        elif free == -1:
            offset = start  # every slot busy: share the home slot's bucket (stricter, bounded)
        tokens = refill(tokens, last, now, capacity, rate)
        lent = min(LEASE_MAX, int(tokens) // LEASE_SHARE) if tokens >= 1.0 else 0
        allowed = tokens >= 1.0
        if allowed:
            tokens -= max(lent, 1)
        SLOT.pack_into(buf, offset, fingerprint, tokens, now, now + (capacity - tokens) / rate)
        if lent > 1:
            self._lend(fingerprint, Lease(lent - 1, tokens, now + LEASE_SECONDS), now)
            return True, tokens + lent - 1, 0.0
        return allowed, tokens, wait_for_token(tokens, rate)

    def _lend(self, fingerprint: int, lease: Lease, now: float) -> None:
        leases = self.leases
        if len(leases) >= LEASES_MAX and fingerprint not in leases:
            for key in [k for k, held in leases.items() if held.until <= now]:
                del leases[key]
            if len(leases) >= LEASES_MAX:
                leases.clear()
        leases[fingerprint] = lease


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_segments() -> None:
    for path in glob.glob(os.path.join(SHM_DIR, "propylon-rl-*")):
        try:
            pid = int(os.path.basename(path).split("-")[2])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(path)


def segment_path(proxy_pid: int | None = None) -> str:
    pid = os.getppid() if proxy_pid is None else proxy_pid
    return os.path.join(SHM_DIR, f"propylon-rl-{pid}-{_start_time(pid)}")


def open_local_buckets() -> SharedBuckets | MemoryBuckets:
    """The proxy's shared table (one per supervisor), or a per-worker one if unavailable."""
    path = segment_path()
    try:
        if not os.path.exists(path):
            remove_stale_segments()
        return SharedBuckets(path)
    except OSError as exc:
        log.warning("rate limits are per worker: cannot map %s (%s)", path, exc)
        return MemoryBuckets()


# -- Redis ------------------------------------------------------------------------------------
TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 'v')
local tokens = tonumber(state[2])
local last = tonumber(state[1])
if tokens == nil or last == nil then tokens = capacity; last = now end
local elapsed = now - last
if elapsed < 0 then elapsed = 0 end
tokens = math.min(capacity, tokens + elapsed * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 't', string.format('%.6f', now), 'v', string.format('%.6f', tokens))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {allowed, string.format('%.6f', tokens)}
"""


class RedisBuckets:
    """Buckets in Redis (standalone or Cluster); one object per worker and server settings."""

    def __init__(self, address: str, cluster: bool, timeout: float, username: str | None = None,
                 password: str | None = None, password_error: str | None = None) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self.host, self.port = host or "127.0.0.1", int(port or 6379)
        self.cluster = cluster
        self.timeout = timeout
        self.login = (username, password, password_error)
        self.skip = Skipping(timeout)
        self.client: Any = None
        self.initialized = not cluster
        self.initializing = asyncio.Lock()
        self.sha = hashlib.sha1(TOKEN_BUCKET_LUA.encode()).hexdigest()

    def _connect(self) -> None:
        import redis.asyncio as aioredis  # redis-py loads when a limit first uses Redis

        # the deadline of the whole check is take()'s
        kwargs = client_options(self.timeout, *self.login)
        if self.cluster:
            self.client = aioredis.RedisCluster(host=self.host, port=self.port, **kwargs)
        else:
            self.client = aioredis.Redis(host=self.host, port=self.port, max_connections=256,
                                         **kwargs)

    def available(self) -> bool:
        """Whether a check asks Redis (False while it is skipped, between probes)."""
        return self.skip.allows()

    async def _initialize(self) -> None:
        """Cluster: learn the slot map once, before any command, with one coroutine.

        A fresh redis-py ``RedisCluster`` hit by concurrent first commands initializes while
        some of them are already connecting, and those fail (``AttributeError: 'NoneType'
        object has no attribute 'writelines'``): seen in about one fresh client in three under
        50 concurrent checks, i.e. a second of failure mode at a worker's first burst."""
        async with self.initializing:
            if not self.initialized:
                await self.client.initialize()
                self.initialized = True

    async def take(self, buckets: list[tuple[str, float, float]]) -> list[Result] | None:
        """One result per (key, capacity, rate), or None when Redis failed or did not
        answer within ``timeout`` (the whole check)."""
        skip = self.skip
        started = time.monotonic()
        try:
            if self.client is None:
                self._connect()
            async with asyncio.timeout(self.timeout):
                replies = await self._replies(buckets)
        except Exception as exc:  # any Redis or socket error means the same: no answer
            skip.failed(started)
            log.warning("rate limit store %s unavailable: %s%s", self.address,
                        failure(exc, self.timeout),
                        " (skipped between probes until it answers)" if skip.skipping else "")
            return None
        skip.answered()
        out: list[Result] = []
        for (_, _, rate), (allowed, tokens) in zip(buckets, replies, strict=True):
            left = float(tokens)
            out.append((bool(allowed), left, wait_for_token(left, rate)))
        return out

    async def _replies(self, buckets: list[tuple[str, float, float]]) -> list[Any]:
        if not self.initialized:
            await self._initialize()
        if self.cluster and len(buckets) > 1:
            return await self._evalsha_cluster(buckets)
        from redis.exceptions import NoScriptError

        try:
            return await self._evalsha(buckets)
        except NoScriptError:
            await self.client.script_load(TOKEN_BUCKET_LUA)  # once per server (restart)
            return await self._evalsha(buckets)

    async def _evalsha_cluster(self, buckets: list[tuple[str, float, float]]) -> list[Any]:
        """Several limits on Redis Cluster: one EVALSHA per key, all in flight at once.

        redis-py refuses EVALSHA in a cluster pipeline (``RedisClusterException: Calling
        pipelined function evalsha is blocked``), and the keys are in different slots, so
        each goes to its own node; the round trips overlap (one round trip of wall time).
        Only the scripts that met NOSCRIPT (a restarted primary) run again, after SCRIPT LOAD
        on every primary, so no bucket is charged twice."""
        from redis.exceptions import NoScriptError

        async def one(bucket: tuple[str, float, float]) -> Any:
            key, capacity, rate = bucket
            return await self.client.evalsha(self.sha, 1, key, capacity, rate)

        replies: list[Any] = await asyncio.gather(*map(one, buckets), return_exceptions=True)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            await self.client.script_load(TOKEN_BUCKET_LUA)
            again = await asyncio.gather(*(one(buckets[i]) for i in missing),
                                         return_exceptions=True)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    async def _evalsha(self, buckets: list[tuple[str, float, float]]) -> list[Any]:
        if len(buckets) == 1:
            key, capacity, rate = buckets[0]
            return [await self.client.evalsha(self.sha, 1, key, capacity, rate)]
        pipe = self.client.pipeline(transaction=False)
        for key, capacity, rate in buckets:
            pipe.evalsha(self.sha, 1, key, capacity, rate)
        replies: list[Any] = await pipe.execute(raise_on_error=True)
        return replies


def ceil_seconds(value: float) -> int:
    return max(1, math.ceil(value)) if value > 0 else 0
