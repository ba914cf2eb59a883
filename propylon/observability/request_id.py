"""Request ids (``x-request-id``): made cheaply on the hot path, kept from trusted proxies.

Format: 36 characters shaped like a UUID, ``pppppppp-pppp-pppp-pppp-cccccccccccc`` in lower-case
hex: the first 20 digits are random, drawn once per process (``os.urandom``, again after a
fork), the last 12 are that process's request counter. An id costs one concatenation (and a
bytes format every 4,096 ids), no system call.

Uniqueness: within a process the counter never repeats before 2**48 requests; two processes
collide only if they drew the same 80-bit prefix, which for n processes ever started (every
worker of every proxy, each restart a new draw) happens with probability about n**2 / 2**81
(under 10**-12 for n = 10**6). The ids are not secrets and not guessing-resistant: the
counter is visible, so they must never be used as tokens.

A client's ``x-request-id`` is kept only when its peer is a trusted proxy (the Gateway's
``trustedProxies``, as for X-Forwarded-For) and the value is 1-200 visible ASCII characters;
otherwise it is replaced by a new id.
"""

from __future__ import annotations

import os
from typing import Final

MAX_KEPT_LENGTH = 200


class _IdSource:
    """The process's prefix and counter (an object, not module names rebound after a fork:
    compiled, reading a Final object's fields is a load, a module name a dict probe)."""

    __slots__ = ("count", "prefix", "upper")

    def __init__(self) -> None:
        self.prefix = b""
        self.count = 0  # requests numbered so far in this process
        self.upper = b""  # the prefix and the counter's digits but the last three


_IDS: Final = _IdSource()
# the counter's last three hex digits, made once: formatting 12 digits per request cost more
# than the rest of the id (about 1,800 CPU instructions, docs/performance.md)
_LAST_DIGITS: Final = tuple(b"%03x" % n for n in range(4096))


def _draw_prefix() -> None:
    digits = os.urandom(10).hex().encode()
    _IDS.prefix = b"%s-%s-%s-%s-" % (digits[:8], digits[8:12], digits[12:16], digits[16:20])
    _IDS.count = 0


_draw_prefix()
os.register_at_fork(after_in_child=_draw_prefix)


def new_request_id() -> bytes:
    ids = _IDS
    count = ids.count
    ids.count = count + 1
    last = count & 0xFFF
    if last == 0:  # every 4,096 requests (and the first)
        ids.upper = ids.prefix + b"%09x" % (count >> 12)
    return ids.upper + _LAST_DIGITS[last]


def accepted_request_id(value: bytes) -> bytes | None:
    """A trusted peer's id, if it is one we can pass on and log as it is."""
    value = value.strip()
    if 0 < len(value) <= MAX_KEPT_LENGTH and value.isascii() and all(
            33 <= byte <= 126 for byte in value):
        return value
    return None
