"""The ``compression`` policy: responses encoded with zstd, Brotli or gzip, as the client's
``Accept-Encoding`` allows (q-values, ``*``, ``identity;q=0``) and the gateway prefers
(``algorithms``, first = best).

A response is a candidate when its media type is one of ``contentTypes``, it has no
``Content-Encoding`` yet, no ``Cache-Control: no-transform``, a status with a body other than
206 (a range of the identity body cannot be re-encoded), and it is not an answer to HEAD.
Candidates get ``Vary: Accept-Encoding`` whether or not this client gets them encoded (a
shared cache must keep the variants apart). One is encoded when a coding is negotiated and
its ``Content-Length``, if it has one, is at least ``minBytes`` (a chunked body is encoded
as it streams: its size is not known before it ends). An encoded response gets
``Content-Encoding``, a weak ``ETag`` (the bytes are no longer the entity's), loses
``Accept-Ranges`` and is re-framed by the session (chunked, or a new length for a whole
body). The body streams: each chunk is encoded and flushed as it comes, nothing is held.
"""

from __future__ import annotations

from typing import Any

from propylon.filters._codings import Encoder, encoder, negotiate, parse_accept_encoding
from propylon.filters.base import Filter, FilterContext, FilterEnv, Headers
from propylon.policies.body import CompressionPolicy

_NO_BODY = frozenset((204, 206, 304))
_STATE_KEY = "compression"


class CompressionFilter(Filter):
    policy_type = "compression"
    settings_model = CompressionPolicy

    __slots__ = ("algorithms", "exact_types", "min_bytes", "type_prefixes")

    def __init__(self, source: str, settings: CompressionPolicy) -> None:
        super().__init__(source)
        self.algorithms = tuple(settings.algorithms)
        self.min_bytes = settings.min_bytes
        types = [t.encode("latin-1") for t in settings.content_types]
        self.exact_types = frozenset(t for t in types if not t.endswith(b"/*"))
        self.type_prefixes = tuple(t[:-1] for t in types if t.endswith(b"/*"))

    @classmethod
    def from_spec(cls, settings: CompressionPolicy, source: str, env: FilterEnv
                  ) -> CompressionFilter:
        return cls(source, settings)

    def on_response(self, ctx: FilterContext, status: int, headers: Headers) -> None:
        if status < 200 or status in _NO_BODY or not self.candidate(headers):
            return
        headers.append((b"vary", b"accept-encoding"))
        if ctx.method == b"HEAD":
            return
        accepted = parse_accept_encoding(
            v for n, v in ctx.request_headers if n == b"accept-encoding")
        coding = negotiate(accepted, self.algorithms)
        if coding is not None:
            state = ctx.state
            if state is None:
                state = ctx.state = {}
            state[_STATE_KEY] = coding

    def on_response_framing(self, ctx: FilterContext, status: int, headers: Headers,
                            length: bytes | None) -> bool:
        """Just before the head goes out (body API, ``proxy/body.py``): encode this body?
        ``length`` is its Content-Length (None when it is chunked or close-delimited)."""
        state = ctx.state
        coding = state.pop(_STATE_KEY, None) if state is not None else None
        if coding is None:
            return False
        if length is not None and int(length) < self.min_bytes:
            return False
        encoded: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            if name == b"etag" and not value.startswith(b"W/"):
                value = b"W/" + value
            elif name == b"accept-ranges":
                continue
            elif name == b"content-encoding" and value.strip().lower() in (b"", b"identity"):
                continue  # RFC 9110 §8.4.1: identity is never listed beside a coding
            encoded.append((name, value))
        encoded.append((b"content-encoding", coding.encode("latin-1")))
        headers[:] = encoded
        assert state is not None
        state[_STATE_KEY] = encoder(coding)
        return True

    def on_response_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                         ) -> bytes | None:
        state = ctx.state
        if state is None:
            return None
        coder: Any = state.get(_STATE_KEY)
        if not isinstance(coder, Encoder):
            return None
        if end_stream:
            return coder.finish(chunk)
        return coder.encode(chunk) if chunk else b""

    def candidate(self, headers: Headers) -> bool:
        media: bytes | None = None
        for name, value in headers:
            if name == b"content-type":
                media = value.partition(b";")[0].strip().lower()
            elif name == b"content-encoding":
                if value.strip().lower() not in (b"", b"identity"):
                    return False
            elif name == b"cache-control" and b"no-transform" in value.lower():
                return False
        if media is None:
            return False
        return media in self.exact_types or media.startswith(self.type_prefixes)
