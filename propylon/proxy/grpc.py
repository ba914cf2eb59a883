"""gRPC over the gateway's HTTP/2: what a gateway-made answer looks like to a gRPC client, and
the ``grpc-timeout`` header (the gRPC over HTTP/2 protocol, PROTOCOL-HTTP2.md).

An error the gateway makes itself (no route, upstream down, timeout, a policy's 401/403/429)
goes to a gRPC client as a *Trailers-Only* answer: HTTP 200, ``content-type:
application/grpc`` and the ``grpc-status`` / ``grpc-message`` the HTTP status maps to, no
body. gRPC clients ignore an HTTP error status's body, so the mapped code is all they see.
A deadline that passes once the upstream's answer began ends the call with DEADLINE_EXCEEDED
in trailers when the body stopped between two messages (``MessageFraming``), else with a
reset.
"""

from __future__ import annotations

from propylon.proxy.http11 import Headers

# gRPC status codes (google.rpc.Code)
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 7, 8, 12, 13, 14
UNAUTHENTICATED = 16

# The gRPC project's HTTP -> gRPC mapping (doc/http-grpc-status-mapping.md), with the two
# answers the gateway gives more precisely: 504 is a deadline it enforced, 413 a size limit.
_FROM_HTTP = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    413: RESOURCE_EXHAUSTED,
    429: UNAVAILABLE,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}

# names used in ``retries.on`` (Envoy's retry-on vocabulary for gRPC)
RETRY_CODES = {
    "cancelled": CANCELLED,
    "deadline-exceeded": DEADLINE_EXCEEDED,
    "internal": INTERNAL,
    "resource-exhausted": RESOURCE_EXHAUSTED,
    "unavailable": UNAVAILABLE,
}

_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def status_of_http(status: int) -> int:
    return _FROM_HTTP.get(status, UNKNOWN)


def is_grpc_request(headers: Headers) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(b"application/grpc")
    return False


def _percent_encode(message: bytes) -> bytes:
    """``grpc-message`` encoding: printable ASCII but ``%`` as is, the rest %XX."""
    return b"".join(bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c
                    for c in message)


def trailers_only(status: int, message: bytes, headers: Headers | None) -> Headers:
    """The fields of a Trailers-Only answer for the gateway's HTTP ``status``."""
    fields = [h for h in headers or [] if h[0] != b"content-type"]
    fields += [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"%d" % status_of_http(status)),
        (b"grpc-message", _percent_encode(message.strip())),
    ]
    return fields


def deadline_trailers() -> Headers:
    """The trailers that end an answer the gateway's deadline cut between two messages: a
    gRPC server past a call's deadline ends it so (DEADLINE_EXCEEDED)."""
    return [(b"grpc-status", b"%d" % DEADLINE_EXCEEDED), (b"grpc-message", b"upstream timed out")]


class MessageFraming:
    """Where a gRPC body stands among its Length-Prefixed-Messages (a 5-byte prefix: flag and
    length, then the message): whether what went through so far ends between two messages.
    Trailers may end the body only there; a call cut inside a message is reset (CANCEL, as
    gRPC's PROTOCOL-HTTP2.md asks of a server whose payload byte sequence is incomplete)."""

    __slots__ = ("message_left", "prefix")

    def __init__(self) -> None:
        self.message_left = 0  # bytes of the current message still to come
        self.prefix = b""  # a prefix not yet complete

    @property
    def between_messages(self) -> bool:
        return not self.message_left and not self.prefix

    def feed(self, data: bytes) -> None:
        at, size = 0, len(data)
        while at < size:
            if self.message_left:
                step = min(self.message_left, size - at)
                self.message_left -= step
                at += step
                continue
            wanted = 5 - len(self.prefix)
            self.prefix += data[at:at + wanted]
            at += wanted
            if len(self.prefix) == 5:
                self.message_left = int.from_bytes(self.prefix[1:], "big")
                self.prefix = b""


def timeout_seconds(value: bytes) -> float | None:
    """``grpc-timeout`` (at most 8 digits and a unit): seconds, or None when malformed."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]


def status_in(headers: Headers | None) -> int | None:
    """The ``grpc-status`` among ``headers`` (trailers, or the head of a Trailers-Only
    answer), if any."""
    for name, value in headers or ():
        if name == b"grpc-status":
            return int(value) if value.isdigit() else UNKNOWN
    return None
