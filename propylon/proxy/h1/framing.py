"""HTTP/1.1 body framing, decided in one place (RFC 9112 §6; h11's ``_body_framing``).

Requests: the framing a client declared is checked for anything two implementations could
read differently (both Content-Length and Transfer-Encoding, codings other than a final
``chunked``, look-alike field names, a body on GET/HEAD). Responses: how the gateway frames
what it sends a client, from the status, the request method, the length it knows (if any) and
the client's HTTP version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from propylon.proxy.http11 import HOP_BY_HOP, Headers, is_token, serialize_headers

if TYPE_CHECKING:
    from propylon.proxy.session import Session


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


FRAMED_BY_LENGTH: Final = 1
FRAMED_BY_CHUNKS: Final = 2
LOOKALIKE_PREFIXES: Final = (b"transfer", b"content")
_FRAMING_NAMES = (b"transferencoding", b"contentlength")


def is_framing_lookalike(name: bytes) -> bool:
    """``Transfer---Encoding`` or ``content.length``: not the real name, but would be read as
    it by a lenient server that drops punctuation."""
    return bytes(c for c in name if 97 <= c <= 122) in _FRAMING_NAMES


def last_chunk(trailers: Headers | None) -> bytes:
    """The end of a chunked body, with its trailer fields."""
    return b"0\r\n" + serialize_headers(trailers) + b"\r\n" if trailers else b"0\r\n\r\n"


def check_framing(ex: Session) -> None:
    """Reject request framing that two HTTP implementations could read differently."""
    if ex.framing == FRAMED_BY_LENGTH | FRAMED_BY_CHUNKS:
        raise BadRequest(400, "both Content-Length and Transfer-Encoding")
    if ex.req_chunked:
        if not ex.http11:
            raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
        ex.te_codings = other_codings(ex.te_codings or b"")
    if ex.has_body and ex.method in (b"GET", b"HEAD"):
        raise BadRequest(400, f"{ex.method.decode()} request with a body")


def other_codings(te_value: bytes) -> bytes | None:
    """The codings of a request's Transfer-Encoding before its final ``chunked`` (RFC 9112
    §6.1), normalised, or None when chunked is the only one. The final coding must be exactly
    ``chunked`` (no parameters), appear once, and every coding must be a token: anything else
    is how one request gets framed differently by two servers."""
    codings = [c.strip(b" \t").lower() for c in te_value.split(b",")]
    codings = [c for c in codings if c]
    if not codings or codings[-1] != b"chunked" or b"chunked" in codings[:-1]:
        raise BadRequest(400, "Transfer-Encoding must end with chunked")
    others = []
    for coding in codings[:-1]:
        name, _, params = coding.partition(b";")
        name = name.strip(b" \t")
        if not is_token(name) or (params.strip(b" \t") and not _params_ok(params)):
            raise BadRequest(400, "invalid Transfer-Encoding coding")
        others.append(coding)
    return b", ".join(others) if others else None


def _params_ok(params: bytes) -> bool:
    for param in params.split(b";"):
        key, eq, _ = param.strip(b" \t").partition(b"=")
        if not is_token(key.strip(b" \t")) or not eq:
            return False
    return True


def has_no_body(status: int, head_only: bool) -> bool:
    """A response that never has a body, whatever its fields say (RFC 9112 §6.3)."""
    return head_only or status < 200 or status == 204 or status == 304


def response_framing(status: int, head_only: bool, length: bytes | None, http11: bool,
                     keep_alive: bool) -> tuple[bytes, bool, bool]:
    """The framing fields of a response head for a client, whether its body goes chunked,
    and whether the connection stays open after it. A known ``length`` is kept; an unknown
    one is chunked for HTTP/1.1 and delimited by closing for HTTP/1.0."""
    chunked = False
    if length is not None:
        framing = b"content-length: " + length + b"\r\n"
    elif has_no_body(status, head_only):
        framing = b""
    elif http11:
        framing = b"transfer-encoding: chunked\r\n"
        chunked = True
    else:
        framing = b""  # an HTTP/1.0 client reads until we close
        keep_alive = False
    if not keep_alive:
        framing += b"connection: close\r\n"
    elif not http11:
        framing += b"connection: keep-alive\r\n"
    return framing, chunked, keep_alive


# Fields that must not appear in trailers (RFC 9110 §6.5.1: framing, routing, request
# modifiers, authentication, response control, content handling) or are hop-by-hop; they are
# dropped from trailers in both directions.
PROHIBITED_TRAILERS = HOP_BY_HOP | frozenset({
    b"content-length", b"host", b"content-type", b"content-encoding", b"content-range",
    b"authorization", b"proxy-authorization", b"www-authenticate", b"set-cookie", b"cookie",
    b"cache-control", b"expires", b"age", b"date", b"location", b"retry-after", b"vary",
    b"expect", b"max-forwards", b"range", b"if-match", b"if-none-match",
    b"if-modified-since", b"if-unmodified-since", b"if-range", b"trailer",
})
MAX_TRAILERS: Final = 100  # fields; more is refused


def add_trailer(session: Session, name: bytes, value: bytes) -> None:
    """One trailer field of a chunked request body, kept to be passed on upstream."""
    if name in PROHIBITED_TRAILERS:
        return
    trailers = session.request_trailers
    if trailers is None:
        session.request_trailers = [(name, value)]
    elif len(trailers) >= MAX_TRAILERS:
        raise BadRequest(431, "too many trailer fields")
    else:
        trailers.append((name, value))


def response_trailers(trailers: Headers) -> Headers:
    """The trailer fields of a response that may be passed on."""
    return [t for t in trailers if t[0] not in PROHIBITED_TRAILERS]
