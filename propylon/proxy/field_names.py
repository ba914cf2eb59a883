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
_LOWER: Final[dict[bytes, bytes]] = {
    written: name for name in _COMMON for written in (name, name.title(), name.upper())}


def lower_name(name: bytes) -> bytes:
    """``name`` in lower case; the one shared object for a common name."""
    lowered = _LOWER.get(name)
    return lowered if lowered is not None else name.lower()
