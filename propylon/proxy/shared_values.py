"""Values that many client connections would each hold a copy of (a Host field value and its
split name, the forwarding fields serialised for a client), kept once per worker process: an
idle keep-alive connection then holds a reference to each, not a copy (docs/performance.md,
"Idle connections"). Looked up when a connection's caches miss, not on every request.
Bounded: a table that fills up is emptied, which only costs copies again."""

from __future__ import annotations

from typing import Final

from propylon.proxy.hostport import split_host

LIMIT: Final = 4096
_BYTES: Final[dict[bytes, bytes]] = {}
_HOSTS: Final[dict[bytes, tuple[bytes, str]]] = {}


def shared_bytes(value: bytes) -> bytes:
    """The worker's one copy of ``value``."""
    kept = _BYTES.get(value)
    if kept is None:
        if len(_BYTES) >= LIMIT:
            _BYTES.clear()
        _BYTES[value] = kept = value
    return kept


def shared_host(value: bytes) -> tuple[bytes, str]:
    """A Host field value -> (the worker's copy of it, its host name without port)."""
    kept = _HOSTS.get(value)
    if kept is None:
        if len(_HOSTS) >= LIMIT:
            _HOSTS.clear()
        kept = (value, split_host(value)[0])
        _HOSTS[value] = kept
    return kept
