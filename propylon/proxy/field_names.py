"""Field names as the HTTP/1.1 codecs keep them: lower-case (RFC 9110 §5.1: case-insensitive).

The names met on almost every request and response are looked up as the peer wrote them
(``Host``, ``content-type``, ``CONTENT-LENGTH``) and the same lower-case object is returned
each time: one dictionary probe instead of a ``lower()`` call and a new object whose hash the
next lookups (field tables, hop-by-hop sets) would compute again. Other names are lowered.
"""

from __future__ import annotations

from typing import Final

_COMMON: Final = (
    b"accept", b"accept-encoding", b"accept-language", b"accept-ranges", b"age",
    b"authorization", b"cache-control", b"connection", b"content-encoding",
    b"content-length", b"content-type", b"cookie", b"date", b"etag", b"expect", b"expires",
    b"forwarded", b"host", b"if-modified-since", b"if-none-match", b"keep-alive",
    b"last-modified", b"location", b"origin", b"pragma", b"referer", b"server",
    b"set-cookie", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"user-agent",
    b"vary", b"via", b"x-api-key", b"x-forwarded-for", b"x-forwarded-host",
    b"x-forwarded-proto", b"x-real-ip", b"x-request-id", b"traceparent", b"tracestate",
    b"grpc-status", b"grpc-message", b"grpc-encoding", b"grpc-accept-encoding", b"grpc-timeout",
)
_SHAPES: Final = 64 * 128  # a name's length (under 64) and its first byte: where its forms are
_MAX_LENGTH: Final = 63


def _forms_by_shape() -> list[tuple[tuple[bytes, bytes], ...] | None]:
    """The common names' usual forms (lower, Title, UPPER case) with their lower-case
    object, by ``_shape``."""
    table: list[tuple[tuple[bytes, bytes], ...] | None] = [None] * _SHAPES
    for name in _COMMON:
        for written in dict.fromkeys((name, name.title(), name.upper(), _titled(name))):
            shape = _shape(written)
            table[shape] = (*(table[shape] or ()), (written, name))
    return table


def _titled(name: bytes) -> bytes:
    """The registered form when ``title()`` does not make it (``ETag``, ``TE``)."""
    return _REGISTERED.get(name, name)


def _shape(name: bytes) -> int:
    return len(name) * 128 + (name[0] & 0x7F)


_REGISTERED: Final[dict[bytes, bytes]] = {b"etag": b"ETag", b"te": b"TE"}
_FORMS: Final = _forms_by_shape()


def lower_name(name: bytes) -> bytes:
    """``name`` in lower case; the one shared object for a common name.

    A name read from the wire is a new object without a hash: a dictionary probe would hash
    it (about 300 instructions). Its length and first byte pick the few usual forms of the
    common names that could be it, compared byte for byte; any other form is lowered."""
    size = len(name)
    if 0 < size <= _MAX_LENGTH:
        forms = _FORMS[size * 128 + (name[0] & 0x7F)]
        if forms is not None:
            for written, lowered in forms:
                if name == written:
                    return lowered
    lowered = name.lower()
    return _COMMON_OBJECTS.get(lowered, lowered)  # a common name in another form


_COMMON_OBJECTS: Final[dict[bytes, bytes]] = {name: name for name in _COMMON}
