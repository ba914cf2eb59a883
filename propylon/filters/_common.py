"""Small pieces the policy filters share: header look-ups, per-request state, consumers.

Everything here runs on the request path, so it works on the raw ``(name, value)`` byte pairs
of ``ctx.request_headers`` (names lower-case) and never decodes more than it needs.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final

from propylon.filters.base import FilterContext, FilterEnv, Headers, LocalResponse
from propylon.ir.model import ConsumerIR
from propylon.policies import auth


def header(headers: Headers, name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def state(ctx: FilterContext) -> dict[str, Any]:
    data = ctx.state
    if data is None:
        data = ctx.state = {}
    return data


def trimmed(value: bytes) -> bytes:
    """``value.strip()``, without the method call when neither end is a space or a control
    character (the usual field value: llhttp keeps trailing spaces, so they can be there)."""
    if value and (value[0] <= 32 or value[-1] <= 32):
        return value.strip()
    return value


def cookie(headers: Headers, name: bytes) -> bytes | None:
    prefix = name + b"="
    for n, v in headers:
        if n == b"cookie":
            for item in v.split(b";"):
                item = item.strip()
                if item.startswith(prefix):
                    return item[len(prefix):]
    return None


def unauthorized(challenge: str, body: bytes = b"unauthorized\n") -> LocalResponse:
    return LocalResponse(401, body, [(b"www-authenticate", challenge.encode("latin-1"))])


# accepted API keys remembered per configuration (then forgotten at once)
KNOWN_KEYS: Final = 10_000


class ConsumerTable:
    """The snapshot's consumers, indexed by credential. Built once per configuration.

    The configuration holds SHA-256 digests of API keys, never the keys; a key a client
    presented and that matched is remembered in this worker's memory (as its requests are),
    so a steady client costs a dict lookup instead of a digest. Unknown keys are not
    remembered: they would only fill the table."""

    __slots__ = ("accepted", "by_key_hash", "known_keys", "users")

    def __init__(self, consumers: tuple[ConsumerIR, ...]) -> None:
        self.by_key_hash: dict[bytes, ConsumerIR] = {}
        self.known_keys: dict[bytes, ConsumerIR] = {}
        # SHA-256 of an Authorization value basic auth accepted -> its consumer
        self.accepted: dict[bytes, ConsumerIR] = {}
        # username -> (consumer, salt, expected hash, iterations)
        self.users: dict[bytes, tuple[ConsumerIR, bytes, bytes, int]] = {}
        for consumer in consumers:
            for digest in consumer.api_keys:
                self.by_key_hash[bytes.fromhex(digest)] = consumer
            for user in consumer.basic_auth:
                self.users.setdefault(
                    user.username.encode(),
                    (consumer, bytes.fromhex(user.salt), bytes.fromhex(user.hash),
                     user.iterations),
                )

    def by_api_key(self, key: bytes) -> ConsumerIR | None:
        consumer = self.known_keys.get(key)
        if consumer is None:
            consumer = self.by_key_hash.get(hashlib.sha256(key).digest())
            if consumer is not None:
                if len(self.known_keys) >= KNOWN_KEYS:
                    self.known_keys.clear()
                self.known_keys[key] = consumer
        return consumer

    def check_password(self, username: bytes, password: bytes) -> ConsumerIR | None:
        entry = self.users.get(username)
        if entry is None:
            # the same work as for a known user, so timing does not reveal user names
            hashlib.pbkdf2_hmac("sha256", password, b"\0" * 16, 20_000)
            return None
        consumer, salt, expected, iterations = entry
        actual = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
        return consumer if hmac.compare_digest(actual, expected) else None


class ConsumerDirectory:
    """A worker's consumers, as the apiKey and basicAuth filters read them on each request:
    one object for the worker's life, whose table is the one of the configuration served.

    A compilation ``prepare``s the table of its snapshot's consumers (the last one while they
    are equal, with the keys it accepted; a new one when they changed) and makes it the
    served one when it is committed, in the same step of the event loop as its runtime is
    swapped in; a compilation that fails leaves it as it was. So a Consumer added, changed or
    removed is one table made, not every filter that reads the consumers built again: the
    chains of 10,000 rules behind a Gateway-level apiKey policy are kept as they were."""

    __slots__ = ("consumers", "pending", "served", "table")

    def __init__(self) -> None:
        self.table: ConsumerTable | None = None  # served (the first one prepared, at first)
        self.served: tuple[ConsumerIR, ...] = ()  # its consumers
        self.pending: ConsumerTable | None = None  # the last one prepared
        self.consumers: tuple[ConsumerIR, ...] = ()  # its consumers

    @classmethod
    def of(cls, env: FilterEnv) -> ConsumerDirectory:
        """The worker's directory, with the table of ``env``'s snapshot prepared."""
        directory = env.shared(("consumers",), cls)
        snapshot = env.snapshot
        directory.prepare(getattr(snapshot, "consumers", ()) if snapshot is not None else ())
        return directory

    def prepare(self, consumers: tuple[ConsumerIR, ...]) -> None:
        """The table of ``consumers`` is the one the next ``commit`` serves."""
        if self.pending is None or not _same(consumers, self.consumers):
            self.pending = (self.table if self.table is not None
                            and _same(consumers, self.served) else ConsumerTable(consumers))
        self.consumers = consumers  # the next filters of this snapshot: found by identity
        if self.table is None:  # nothing is served before the first commit
            self.table, self.served = self.pending, consumers

    def commit(self) -> None:
        if self.pending is not None:
            self.table, self.served = self.pending, self.consumers

    def abort(self) -> None:
        """The compilation failed: what it prepared is forgotten."""
        if self.table is not None:
            self.pending, self.consumers = self.table, self.served


def _same(a: tuple[ConsumerIR, ...], b: tuple[ConsumerIR, ...]) -> bool:
    return a is b or a == b


class ConsumerHeaders:
    """Names the authenticated consumer to the upstream; copies sent by the client are dropped
    first, so an upstream can trust them."""

    __slots__ = ("fields", "labels_name", "name_name")

    def __init__(self, settings: auth.ConsumerHeaders) -> None:
        self.name_name = settings.name.encode("latin-1")
        self.labels_name = settings.labels.encode("latin-1")
        # consumer key -> the consumer and the fields naming it (a changed consumer, its
        # labels for instance, is another object: made again)
        self.fields: dict[str, tuple[ConsumerIR, Headers]] = {}

    def identify(self, ctx: FilterContext, consumer: ConsumerIR) -> None:
        ctx.consumer = consumer
        name_name, labels_name = self.name_name, self.labels_name
        headers = ctx.request_headers
        for name, _ in headers:
            if name in (name_name, labels_name):
                headers[:] = [h for h in headers if h[0] not in (name_name, labels_name)]
                break
        known = self.fields.get(consumer.key)
        if known is not None and known[0] is consumer:
            fields = known[1]
        else:
            fields = [(name_name, consumer.name.encode("latin-1"))]
            if consumer.labels:
                labels = ",".join(f"{k}={v}" for k, v in consumer.labels.items())
                fields.append((labels_name, labels.encode("latin-1")))
            if len(self.fields) >= KNOWN_KEYS:
                self.fields.clear()
            self.fields[consumer.key] = (consumer, fields)
        headers.extend(fields)
