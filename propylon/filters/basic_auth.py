"""The ``basicAuth`` policy: HTTP Basic credentials checked against Consumers' users.

Passwords are stored as PBKDF2-HMAC-SHA256 (salted, see translate/consumers.py) and compared
with ``hmac.compare_digest``. Deriving the hash costs a few milliseconds, so a worker keeps the
SHA-256 digests of the ``Authorization`` values it has already accepted (bounded, per
configuration): a repeat client costs one hash and one dict look-up. Failures are never
cached. ``401`` with ``WWW-Authenticate: Basic realm=...`` otherwise, also when the request
has more than one ``Authorization`` field (a singleton field: which copy would count?).
A consumer the policy's ``consumers`` restriction does not let through is ``403``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from propylon.filters._common import (
    ConsumerDirectory,
    ConsumerHeaders,
    ConsumerTable,
    unauthorized,
)
from propylon.filters._consumer_acl import ConsumerRestriction
from propylon.filters.base import Filter, FilterContext, FilterEnv, LocalResponse
from propylon.ir.model import ConsumerIR
from propylon.policies.auth import BasicAuthPolicy

_ACCEPTED_MAX = 4096


class BasicAuthFilter(Filter):
    policy_type = "basicAuth"
    settings_model = BasicAuthPolicy

    __slots__ = ("consumer_headers", "consumers", "denied", "duplicate", "restriction")

    def __init__(
        self, source: str, consumers: ConsumerDirectory, realm: str,
        consumer_headers: ConsumerHeaders, restriction: ConsumerRestriction | None = None,
    ) -> None:
        super().__init__(source)
        self.consumers = consumers  # read on each request: the worker's, as served
        self.restriction = restriction
        self.consumer_headers = consumer_headers
        self.denied = unauthorized(f'Basic realm="{realm}", charset="UTF-8"')
        self.duplicate = unauthorized(f'Basic realm="{realm}", charset="UTF-8"',
                                      b"unauthorized: more than one Authorization header\n")

    @classmethod
    def from_spec(cls, settings: BasicAuthPolicy, source: str, env: FilterEnv
                  ) -> BasicAuthFilter:
        return cls(source, ConsumerDirectory.of(env), settings.realm,
                   ConsumerHeaders(settings.consumer_headers),
                   ConsumerRestriction.of(settings.consumers))

    def on_request(self, ctx: FilterContext) -> LocalResponse | None:
        values = [v for n, v in ctx.request_headers if n == b"authorization"]
        if len(values) != 1:
            return self.duplicate if values else self.denied
        value = values[0]
        if value[:6].lower() != b"basic ":
            return self.denied
        table = self.consumers.table
        assert table is not None  # prepared before any filter is built
        accepted = table.accepted  # of the consumers served: a changed password is not in it
        digest = hashlib.sha256(value).digest()
        consumer = accepted.get(digest)
        if consumer is None:
            consumer = self.verify(table, value[6:].strip())
            if consumer is None:
                return self.denied
            if len(accepted) >= _ACCEPTED_MAX:
                accepted.clear()
            accepted[digest] = consumer
        restriction = self.restriction
        if restriction is not None and not restriction.admits(consumer):
            return restriction.forbidden
        ctx.request_headers[:] = [h for h in ctx.request_headers if h[0] != b"authorization"]
        self.consumer_headers.identify(ctx, consumer)
        return None

    def verify(self, table: ConsumerTable, encoded: bytes) -> ConsumerIR | None:
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return None
        username, sep, password = decoded.partition(b":")
        if not sep:
            return None
        return table.check_password(username, password)
