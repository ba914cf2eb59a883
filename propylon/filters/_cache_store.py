"""Where the cache keeps answers: one ``MemoryStore`` per worker (least recently used first
out, bounded in bytes), or Redis, shared by every worker and proxy.

An entry is found by its base key (``host`` + path + ``?query``, plus the ``keyHeaders``
values after ``|``; ``%`` and ``|`` inside each part written ``%25`` and ``%7C``:
``escape_key``) and then by its variant: the values of the request fields its answer's
``Vary`` names. Entries carry the tags of the answer's ``Cache-Tag`` field.

Purges reach every worker through the proxy's purge log, a file in ``/dev/shm`` named after
the supervisor (as the rate limiter's table is): the admin listener appends one JSON line per
purge, each worker reads what was appended before its next lookup (one ``fstat``). The log's
first line is a random token, shared by the workers of one proxy, that marks the cache's own
revalidation requests (``x-propylon-cache-fetch``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import glob
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from propylon.filters._redis import PasswordUnreadable, Skipping, client_options, failure

log = logging.getLogger("propylon.filters.cache")

Headers = list[tuple[bytes, bytes]]
SHM_DIR = "/dev/shm"
T = TypeVar("T")


@dataclass(slots=True)
class Entry:
    key: str  # base key
    vary: tuple[tuple[str, str], ...]  # (request field, value) the answer varies on
    status: int
    headers: Headers  # as the client got them, minus framing and the cache's own fields
    body: bytes
    stored_at: float  # wall clock (shared between processes and proxies)
    initial_age: float
    lifetime: float
    stale_while_revalidate: float
    stale_if_error: float
    tags: tuple[str, ...] = ()
    size: int = field(default=0)

    def age(self, now: float) -> float:
        return self.initial_age + max(now - self.stored_at, 0.0)

    def to_bytes(self) -> bytes:
        meta = {"k": self.key, "v": self.vary, "s": self.status,
                "h": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
                "t": self.stored_at, "a": self.initial_age, "l": self.lifetime,
                "w": self.stale_while_revalidate, "e": self.stale_if_error, "g": self.tags}
        return json.dumps(meta).encode() + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        meta_text, _, body = data.partition(b"\n")
        meta = json.loads(meta_text)
        return cls(meta["k"], tuple((n, v) for n, v in meta["v"]), meta["s"],
                   [(n.encode("latin-1"), v.encode("latin-1")) for n, v in meta["h"]],
                   body, meta["t"], meta["a"], meta["l"], meta["w"], meta["e"],
                   tuple(meta["g"]), len(body))


def variant_of(request: Headers, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The request's values of ``names`` (repeated fields joined, whitespace normalised)."""
    out = []
    for name in names:
        wanted = name.encode("latin-1")
        values = [v.decode("latin-1").strip() for n, v in request if n == wanted]
        out.append((name, ", ".join(" ".join(v.split()) for v in values)))
    return tuple(out)


def matches(entry: Entry, request: Headers) -> bool:
    return variant_of(request, tuple(n for n, _ in entry.vary)) == entry.vary


def escape_key(part: str) -> str:
    """A part of a key (the URI, a ``keyHeaders`` value) with ``%`` and ``|`` escaped, so that
    ``|`` separates the parts and nothing else."""
    if "%" in part:
        part = part.replace("%", "%25")
    if "|" in part:
        part = part.replace("|", "%7C")
    return part


def key_prefix(prefix: str) -> str:
    """A purge rule's prefix as keys are written: its ``%`` escaped; a ``|`` in it is the
    separator before the ``keyHeaders`` values."""
    return prefix.replace("%", "%25")


def uri_of_key(key: str) -> str:
    """The URI part of a base key (before the ``keyHeaders`` values)."""
    return key.partition("|")[0]


def purge_matches(entry_key: str, tags: tuple[str, ...], rule: dict[str, Any]) -> bool:
    prefix, tag, uri = rule.get("prefix"), rule.get("tag"), rule.get("uri")
    if prefix is not None:
        return entry_key.startswith(key_prefix(prefix))
    if uri is not None:  # an invalidation: the URI part (already escaped) is that one
        return uri_of_key(entry_key) == uri
    return tag is not None and tag in tags


class MemoryStore:
    """One worker's entries, least recently used first out when ``max_bytes`` is passed."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: collections.OrderedDict[tuple[str, tuple[Any, ...]], Entry] = (
            collections.OrderedDict())
        self.variants: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        self.uris: dict[str, set[str]] = {}  # URI part -> base keys (keyHeaders values)

    def get(self, key: str, request: Headers) -> Entry | None:
        for full in self.variants.get(key, ()):
            entry = self.entries[full]
            if matches(entry, request):
                self.entries.move_to_end(full)
                return entry
        return None

    def put(self, entry: Entry) -> None:
        entry.size = len(entry.body) + sum(len(n) + len(v) for n, v in entry.headers) + 200
        if entry.size > self.max_bytes:
            return
        full = (entry.key, entry.vary)
        self.remove(full)
        self.entries[full] = entry
        self.variants.setdefault(entry.key, []).append(full)
        self.uris.setdefault(uri_of_key(entry.key), set()).add(entry.key)
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            oldest = next(iter(self.entries))
            self.remove(oldest)

    def remove(self, full: tuple[str, tuple[Any, ...]]) -> None:
        entry = self.entries.pop(full, None)
        if entry is None:
            return
        self.bytes -= entry.size
        keys = self.variants.get(full[0])
        if keys is not None:
            keys.remove(full)
            if not keys:
                del self.variants[full[0]]
                uri = uri_of_key(full[0])
                same_uri = self.uris.get(uri)
                if same_uri is not None:
                    same_uri.discard(full[0])
                    if not same_uri:
                        del self.uris[uri]

    def purge(self, rule: dict[str, Any]) -> int:
        uri = rule.get("uri")
        if uri is not None:  # found through the index: an invalidation is per request
            doomed = [full for key in tuple(self.uris.get(uri, ()))
                      for full in self.variants.get(key, ())]
        else:
            doomed = [full for full, entry in self.entries.items()
                      if purge_matches(entry.key, entry.tags, rule)]
        for full in doomed:
            self.remove(full)
        return len(doomed)


class RedisStore:
    """Entries in Redis: a hash per base key (``PREFIX:k:KEY``, one field per variant: the
    JSON of its ``vary``), a set per tag (``PREFIX:t:TAG``) naming the base keys, and for a
    base key with ``keyHeaders`` values a set per URI (``PREFIX:u:URI``) naming them, for
    invalidations. Each operation is bounded by the policy's ``redis.timeout``; a failure is a
    miss (or an entry not stored, or not dropped), logged at most once a minute. A Redis that
    keeps failing is skipped between probes (``Skipping``), so a hung one does not cost every
    request its timeout."""

    def __init__(self, address: str, prefix: str, timeout: float, username: str | None = None,
                 password: str | None = None, password_error: str | None = None) -> None:
        import redis.asyncio as aioredis

        host, _, port = address.rpartition(":")
        self.password_error: PasswordUnreadable | None = None
        try:
            options = client_options(timeout, username, password, password_error)
        except PasswordUnreadable as exc:  # every operation fails, as with Redis down
            self.password_error = exc
            options = {}
        self.client = aioredis.Redis(host=host or "127.0.0.1", port=int(port or 6379),
                                     **options)
        self.address = address
        self.prefix = prefix
        self.timeout = timeout
        self.last_error = float("-inf")
        self.skip = Skipping(timeout)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:k:{key}"

    def _failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self.last_error > 60:
            self.last_error = now
            log.warning("cache store redis %s: %s failed: %s%s", self.address, what,
                        failure(exc, self.timeout),
                        " (skipped between probes until it answers)" if self.skip.skipping
                        else "")

    async def _ask(self, what: str, operation: Callable[[], Awaitable[T]]) -> T | None:
        """``operation``'s answer within ``timeout``; None if it failed, had no answer in
        time, or Redis is being skipped."""
        skip = self.skip
        if not skip.allows():
            return None
        started = time.monotonic()
        try:
            if self.password_error is not None:
                raise self.password_error
            async with asyncio.timeout(self.timeout):
                answer = await operation()
        except Exception as exc:
            skip.failed(started)
            self._failed(what, exc)
            return None
        skip.answered()
        return answer

    async def get(self, key: str, request: Headers) -> Entry | None:
        variants = await self._ask("get", lambda: self.client.hvals(self._key(key)))
        for data in variants or ():
            entry = Entry.from_bytes(_raw(data))
            if matches(entry, request):
                return entry
        return None

    async def put(self, entry: Entry, keep_for: float) -> None:
        await self._ask("put", lambda: self._put(entry, keep_for))

    async def _put(self, entry: Entry, keep_for: float) -> None:
        name = self._key(entry.key)
        pipe = self.client.pipeline(transaction=False)
        keep = max(int(keep_for) + 1, 1)
        pipe.hset(name, json.dumps(entry.vary), entry.to_bytes())
        pipe.expire(name, keep)
        sets = [f"{self.prefix}:t:{tag}" for tag in entry.tags]
        uri = uri_of_key(entry.key)
        if uri != entry.key:
            sets.append(f"{self.prefix}:u:{uri}")
        for index in sets:
            pipe.sadd(index, entry.key)
            # as long as its longest-lived entry (NX: a new set has no expiry yet, and GT
            # alone never sets one on a key without)
            pipe.expire(index, keep, nx=True)
            pipe.expire(index, keep, gt=True)
        await pipe.execute()

    async def remove(self, key: str, vary: tuple[tuple[str, str], ...]) -> None:
        """One entry: that variant of that key."""
        await self._ask("remove", lambda: self.client.hdel(self._key(key), json.dumps(vary)))

    async def invalidate(self, uri: str) -> None:
        """Every entry of that URI part: each variant of the base key, and of the base keys
        with ``keyHeaders`` values that the URI's set names."""
        await self._ask("invalidate", lambda: self._invalidate(uri))

    async def _invalidate(self, uri: str) -> None:
        index = f"{self.prefix}:u:{uri}"
        members = await self.client.smembers(index)
        names = [self._key(uri), index, *(self._key(_raw(k).decode()) for k in members)]
        await self.client.delete(*names)

    async def purge(self, rule: dict[str, Any]) -> int:
        if self.password_error is not None:
            raise self.password_error
        async with asyncio.timeout(max(self.timeout, 5.0)):
            if rule.get("tag") is not None:
                tag_key = f"{self.prefix}:t:{rule['tag']}"
                members = await self.client.smembers(tag_key)
                keys = [self._key(_raw(k).decode()) for k in members]
                count = int(await self.client.delete(*keys)) if keys else 0
                await self.client.delete(tag_key)
                return count  # the entries' keys deleted, not the tag's set
            if rule.get("uri") is not None:
                await self.invalidate(rule["uri"])
                return 0
            pattern = _glob_escape(self._key(key_prefix(rule["prefix"]))) + "*"
            count = 0
            async for name in self.client.scan_iter(match=pattern, count=500):
                count += int(await self.client.delete(name))
            return count


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# -- the proxy's purge log -------------------------------------------------------------------
def purge_log_path(proxy_pid: int | None = None) -> str:
    from propylon.filters._buckets import _start_time

    pid = os.getppid() if proxy_pid is None else proxy_pid
    return os.path.join(SHM_DIR, f"propylon-cache-{pid}-{_start_time(pid)}")


def append_purge(rule: dict[str, Any], proxy_pid: int) -> None:
    """Called by the admin listener (the supervisor): the workers apply it before their next
    lookup."""
    path = purge_log_path(proxy_pid)
    _ensure_log(path)
    with open(path, "ab") as out:
        out.write(json.dumps(rule).encode() + b"\n")


def _ensure_log(path: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_hex(16).encode() + b"\n")
    _remove_stale_logs()


def _remove_stale_logs() -> None:
    """Logs of proxies that are gone (their supervisor does not remove its own)."""
    from propylon.filters._buckets import _alive

    for path in glob.glob(os.path.join(SHM_DIR, "propylon-cache-*")):
        try:
            pid = int(os.path.basename(path).split("-")[2])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(path)


class PurgeLog:
    """A worker's reader of the purge log, opened on first use: ``pending()`` gives the
    rules appended since the last call; ``token`` marks the proxy's revalidations."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.file: Any = None
        self.writer: int | None = None  # the log opened to append (invalidations)
        self._token: bytes | None = None
        self.offset = 0

    @property
    def token(self) -> bytes:
        if self._token is None:
            self._open()
        assert self._token is not None
        return self._token

    def _open(self) -> None:
        self._token = secrets.token_hex(16).encode()  # this worker's own, if the log fails
        path = self.path = self.path or purge_log_path()
        try:
            _ensure_log(path)
            self.file = open(path, "rb")  # noqa: SIM115 - kept open for the worker's life
            self._token = self.file.readline().strip()
            self.offset = self.file.tell()
        except OSError as exc:
            log.warning("cache purges reach this worker only: cannot open %s (%s)", path, exc)

    def append(self, rule: dict[str, Any]) -> bool:
        """A worker's own rule (an unsafe method's invalidation) for every worker of the
        proxy, this one included, before their next lookup; False: it reaches none."""
        if self._token is None:
            self._open()
        if self.file is None or self.path is None:
            return False
        try:
            if self.writer is None:
                self.writer = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            os.write(self.writer, json.dumps(rule).encode() + b"\n")  # one write: atomic
        except OSError as exc:
            log.warning("cache invalidation reaches this worker only: %s", exc)
            return False
        return True

    def pending(self) -> list[dict[str, Any]]:
        if self._token is None:
            self._open()
        file = self.file
        if file is None or os.fstat(file.fileno()).st_size <= self.offset:
            return []
        file.seek(self.offset)
        data = file.read()
        complete = data.rfind(b"\n") + 1
        self.offset += complete
        rules = []
        for line in data[:complete].splitlines():
            with contextlib.suppress(ValueError):
                rules.append(json.loads(line))
        return rules
