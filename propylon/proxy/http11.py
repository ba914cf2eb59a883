"""HTTP/1.1 wire helpers shared by the downstream and upstream sides (RFC 9110, RFC 9112).

Header lists on the hot path are ``list[tuple[bytes, bytes]]`` with lower-case names; they are
serialised from parsed fields only, never by copying raw client bytes.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

Headers = list[tuple[bytes, bytes]]

# Hop-by-hop fields (RFC 9110 §7.6.1) plus the legacy ones proxies also drop. Names listed in
# the Connection field are hop-by-hop too and are removed per message.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: Final[dict[int, bytes]] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``, cached per status code."""
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = _REASONS.get(status, b"Unknown")
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    return line


def connection_tokens(value: bytes) -> set[bytes]:
    """The lower-case option names of a Connection field value."""
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


# A head of up to this many fields is grown field by field, past it the lines are joined:
# compiled, ``b"%b..." % (...)`` of bytes is one allocation and a copy of each operand, cheaper
# than a list and a join for the few fields of a usual head; the copies of the head so far
# grow with the square of its fields, hence the bound.
GROWN_FIELDS: Final = 8


def serialize_headers(headers: Headers) -> bytes:
    """``name: value\\r\\n`` per field."""
    return head_with_fields(b"", headers)


def head_with_fields(start: bytes, headers: Headers) -> bytes:
    """``start`` (a status or request line), then ``name: value\\r\\n`` per field."""
    if len(headers) > GROWN_FIELDS:
        parts = [start]
        for name, value in headers:
            parts.append(b"%b: %b\r\n" % (name, value))
        return b"".join(parts)
    head = start
    for name, value in headers:
        head = b"%b%b: %b\r\n" % (head, name, value)
    return head


def simple_response(
    status: int,
    body: bytes = b"",
    headers: Headers | None = None,
    *,
    close: bool = False,
    head_only: bool = False,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> bytes:
    """A complete locally generated response (errors, direct responses, redirects)."""
    head = head_with_fields(status_line(status), headers) if headers else status_line(status)
    with_body = status >= 200 and status not in (204, 304)  # RFC 9110 §6.4.1: never a body
    if with_body:
        if body:
            head = b"%bcontent-type: %b\r\n" % (head, content_type)
        head = b"%bcontent-length: %d\r\n" % (head, len(body))
    if close:
        head = b"%bconnection: close\r\n" % head
    if body and with_body and not head_only:
        return b"%b\r\n%b" % (head, body)
    return b"%b\r\n" % head


def is_token(name: bytes) -> bool:
    """RFC 9110 token characters only."""
    return bool(name) and not name.translate(None, _TOKEN_CHARS)


_TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
