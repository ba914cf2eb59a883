"""The HTTP/1.1 fuzz target: bytes from a client through the real downstream protocol.

``check_http(data)`` raises on the first input that breaks a property. ``data[0]`` picks a
mode:

- even: **raw**. ``data[1]`` is the size of each read (0: one read per segment); the rest is
  the client's byte stream, cut into segments at ``SEGMENT``, with 1.5 s of (virtual) time
  between segments; ``data[0] & 2``: the peer is a trusted proxy; ``data[0] & 4``: the client
  half-closes at the end. Properties: the client reads only well-formed HTTP/1.1 responses,
  in order, at most one per request plus one 4xx that rejects a bad request and closes; no
  status 500, no ERROR logged (``request handling failed`` with its traceback included), no
  exception; what reaches an upstream parses as HTTP/1.1 with one Host and unambiguous
  framing; an unfinished request head stops being read once it outgrows the listener's
  limits; the connection ends once every timeout passed; nothing is left counted as active in
  the clusters, endpoints and pools.
- odd: **structured**. The bytes choose 1-3 pipelined requests with bodies, framed by
  Content-Length or as chunks of random sizes with extensions and trailers, cut into reads
  of random sizes. On top of the raw properties: every request reaches the upstream once,
  with its body unchanged and its framing kept, and gets a 200; body bytes read but not yet
  sent upstream stay bounded (``MAX_BACKLOG``) or reading pauses.
- 0xA0-0xBF: either mode **behind a PROXY protocol header**, to a listener that requires one
  or takes one optionally; on top of the mode's properties, those of ``proxy_prefix``
  (refused connections get nothing and forward nothing, accepted ones forward the header's
  client).

Problems that a known, reported gateway bug explains are counted, not failed
(``known_issues``).
"""

from __future__ import annotations

import bisect
import logging
import random
from dataclasses import dataclass

from tests.fuzz.http_harness import (
    CLIENT_PEER,
    TRUSTED_PEER,
    ClientConnection,
    FuzzGateway,
    UpstreamRequest,
)
from tests.fuzz.known_issues import attribute
from tests.fuzz.proxy_prefix import Expected, ProxyPlan, check_outcome, is_proxy_mode
from tests.fuzz.proxy_prefix import model_skip as proxy_model_skip
from tests.fuzz.proxy_prefix import refusal_bound as proxy_refusal_bound
from tests.fuzz.responses import BadOutput, Response, read_responses

_ANSWER_500 = "a 500 answer (an internal error)"
SEGMENT = b"\xfe\xff"  # raw mode: time passes here
SEGMENT_PAUSE = 1.5  # seconds; two pauses pass the harness's 2 s header timeout

_GATEWAY: FuzzGateway | None = None


class PropertyFailed(AssertionError):
    pass


class _ErrorLog(logging.Handler):
    """Every record at ERROR or above, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


def gateway() -> FuzzGateway:
    global _GATEWAY
    if _GATEWAY is None:
        _GATEWAY = FuzzGateway()
    return _GATEWAY


def close() -> None:
    """Close the shared gateway's event loop (end of a test session)."""
    global _GATEWAY
    if _GATEWAY is not None:
        _GATEWAY.loop.close()
        _GATEWAY = None


def check_http(data: bytes) -> None:
    if not data:
        return
    gw = gateway()
    gw.reset()
    errors = _ErrorLog()
    root = logging.getLogger()
    root.addHandler(errors)
    try:
        plan = ProxyPlan.from_flags(data[0], bool(data[0] & 1)) if is_proxy_mode(
            data[0]) else None
        if data[0] & 1:
            _check_structured(gw, data, plan)
        else:
            _check_raw(gw, data, plan)
    finally:
        root.removeHandler(errors)
    gw.problems += [f"ERROR logged: {record}" for record in errors.records]
    _judge(gw)


def _judge(gw: FuzzGateway) -> None:
    """Fail on any problem that no known issue explains (on any problem, in strict mode)."""
    if not gw.problems:
        return
    known, unknown = (set(), gw.problems) if gw.strict else attribute(gw.problems)
    if unknown:
        raise PropertyFailed(_report(gw))
    for issue in known:
        gw.known(issue)


# -- raw mode -----------------------------------------------------------------------------
def _check_raw(gw: FuzzGateway, data: bytes, plan: ProxyPlan | None = None) -> None:
    flags, size = data[0], data[1] if len(data) > 1 else 0
    segments = data[2:].split(SEGMENT)
    if plan is None:
        conn = ClientConnection(gw, TRUSTED_PEER if flags & 2 else CLIENT_PEER)
    else:
        segments[0] = plan.header + segments[0]
        conn, expected = _proxy_connection(gw, plan, b"".join(segments))
    for index, segment in enumerate(segments):
        if index:
            conn.advance(SEGMENT_PAUSE)
        conn.feed(_cut(segment, size))
    if flags & 4:
        conn.send_eof()
    conn.finish()
    _check_client_output(gw, conn)
    if plan is not None:
        check_outcome(expected, bytes(conn.transport.output), gw.requests, gw.problem)


def _proxy_connection(gw: FuzzGateway, plan: ProxyPlan,
                      stream: bytes) -> tuple[ClientConnection, Expected]:
    """A connection to the PROXY listener of ``plan``'s mode, and what it must do with
    ``stream``."""
    expected = plan.expect(stream)
    conn = ClientConnection(gw, plan.peer, gw.proxy_listeners[plan.optional])
    conn.model_skip = proxy_model_skip(expected)
    conn.refusal_bound = proxy_refusal_bound(expected)
    return conn, expected


def _cut(data: bytes, size: int) -> list[bytes]:
    if not size:
        return [data]
    return [data[i:i + size] for i in range(0, len(data), size)]


def _check_client_output(gw: FuzzGateway, conn: ClientConnection) -> list[Response]:
    transport = conn.transport
    requests = conn.model.methods
    try:
        responses = read_responses(bytes(transport.output), requests, transport.aborted)
    except BadOutput as exc:
        gw.problem(f"client output: {exc}")
        responses = []
    for index, response in enumerate(responses):
        if response.status == 500 and _ANSWER_500 not in gw.problems:
            gw.problem(_ANSWER_500)
        if index >= len(requests) and not (400 <= response.status < 500 and response.closes):
            gw.problem(f"a {response.status} answer to no request, without a 4xx close")
    return responses


def _report(gw: FuzzGateway) -> str:
    lines = ["properties broken:", *(f"  - {p}" for p in gw.problems)]
    for conn in gw.clients:
        lines.append(f"request methods (as a lenient server parses them): {conn.model.methods}")
        lines.append(f"client output ({len(conn.transport.output)} bytes): "
                     f"{bytes(conn.transport.output[:2000])!r}")
    lines.append(f"upstream requests: {[(r.method, r.target) for r in gw.requests]}")
    return "\n".join(lines)


# -- structured mode: bodies must arrive unchanged ----------------------------------------
class ByteSource:
    """Numbers drawn from the fuzzer's bytes (zeros once they run out)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.data)

    def below(self, n: int) -> int:
        return ((self.byte() << 8) | self.byte()) % n

    def choice(self, options: tuple[bytes, ...]) -> bytes:
        return options[self.byte() % len(options)]


@dataclass
class SentRequest:
    method: bytes
    path: bytes
    body: bytes
    chunked: bool
    raw: bytes
    spans: list[tuple[int, int]]  # (offset in raw, length) of each piece of body


class BodyOffsets:
    """How many body bytes the first N bytes of a stream of requests hold (O(log n))."""

    def __init__(self, requests: list[SentRequest]) -> None:
        self.starts: list[int] = []
        self.lengths: list[int] = []
        self.before: list[int] = []  # body bytes before each span
        base = total = 0
        for request in requests:
            for offset, length in request.spans:
                self.starts.append(base + offset)
                self.lengths.append(length)
                self.before.append(total)
                total += length
            base += len(request.raw)

    def __call__(self, consumed: int) -> int:
        index = bisect.bisect_right(self.starts, consumed) - 1
        if index < 0:
            return 0
        return self.before[index] + min(self.lengths[index], consumed - self.starts[index])


_METHODS = (b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS")
_PATHS = (b"/b", b"/chunked", b"/rewrite/b?q=1", b"/cors/b", b"/close", b"/100", b"/re/abc",
          b"/mirror/b", b"/retry/b", b"/slowbody")
_EXTENSIONS = (b"", b";a", b";a=b", b';a="q \\" d"', b";x-y=1;z", b";" + b"e" * 40)
_TRAILERS = (b"", b"x-t: 1\r\n", b"x-t: 1\r\nx-u: a b\r\n", b"etag: \"e\"\r\n")


def _check_structured(gw: FuzzGateway, data: bytes, plan: ProxyPlan | None = None) -> None:
    src = ByteSource(data[1:])
    requests = [_make_request(src, n) for n in range(1 + src.below(3))]
    stream = b"".join(r.raw for r in requests)
    offsets = BodyOffsets(requests)
    if plan is None:
        conn = ClientConnection(gw, CLIENT_PEER)
        conn.backlog_of = offsets
    else:  # a valid header from the balancer: every request must still be delivered
        stream = plan.header + stream
        conn, expected = _proxy_connection(gw, plan, stream)
        skipped = len(plan.header)
        conn.backlog_of = lambda consumed: offsets(max(0, consumed - skipped))
    reads, pos = [], 0
    scale = (64, 2048, 65536)[src.byte() % 3]  # reads of up to 64 B, 2 KiB or 64 KiB
    if len(stream) > 20_000:
        scale = 65536  # big bodies in small reads: slow, and not more interesting
    while pos < len(stream):
        size = len(stream) - pos if src.exhausted else 1 + src.below(scale)
        reads.append(stream[pos:pos + size])
        pos += size
    conn.feed(reads)
    conn.finish()
    responses = _check_client_output(gw, conn)
    _check_delivery(gw, requests, responses)
    if plan is not None:
        check_outcome(expected, bytes(conn.transport.output), gw.requests, gw.problem)


def _make_request(src: ByteSource, index: int) -> SentRequest:
    method, path = src.choice(_METHODS), src.choice(_PATHS)
    size = src.below(300_000) if src.byte() == 255 else src.below(5000)
    body = random.Random(src.byte() * 1000 + index).randbytes(size)
    chunked = bool(src.byte() & 1)
    head = [method + b" " + path + b" HTTP/1.1", b"host: fuzz.example"]
    if src.byte() & 3 == 3:
        head.append(b"expect: 100-continue")
    if chunked:
        head.append(b"transfer-encoding: chunked")
    else:
        head.append(b"content-length: %d" % len(body))
    raw = b"\r\n".join(head) + b"\r\n\r\n"
    framed, spans = _chunks(src, body, len(raw)) if chunked else (body, [(len(raw), len(body))])
    return SentRequest(method, path, body, chunked, raw + framed, spans)


def _chunks(src: ByteSource, body: bytes, base: int) -> tuple[bytes, list[tuple[int, int]]]:
    """``body`` as chunks of random sizes, with extensions and trailers; the spans of the
    chunks' data (offsets from ``base``)."""
    out, spans, pos, offset = [], [], 0, base
    while pos < len(body):
        small = src.byte() & 1 and len(body) < 20_000
        size = 1 + (src.below(100) if small else src.below(len(body)))
        if src.exhausted:
            size = len(body) - pos  # the rest in one chunk once the input runs out
        chunk = body[pos:pos + size]
        size_text = b"%x" % len(chunk) if src.byte() & 1 else b"%04X" % len(chunk)
        line = size_text + src.choice(_EXTENSIONS) + b"\r\n"
        spans.append((offset + len(line), len(chunk)))
        out.append(line + chunk + b"\r\n")
        offset += len(line) + len(chunk) + 2
        pos += size
    out.append(b"0" + src.choice(_EXTENSIONS) + b"\r\n" + src.choice(_TRAILERS) + b"\r\n")
    return b"".join(out), spans


def _check_delivery(gw: FuzzGateway, sent: list[SentRequest], responses: list[Response]) -> None:
    upstream = [r for r in gw.requests if not r.mirrored]
    if [r.status for r in responses] != [200] * len(sent):
        others = [r.body[:80] for r in responses if r.status != 200]
        gw.problem(f"statuses {[r.status for r in responses]} for {len(sent)} requests "
                   f"(other answers: {others})")
    if len(upstream) != len(sent):
        gw.problem(f"{len(upstream)} requests reached the upstream, {len(sent)} were sent")
    for request, got in zip(sent, upstream, strict=False):
        _check_one(gw, request, got)


def _check_one(gw: FuzzGateway, sent: SentRequest, got: UpstreamRequest) -> None:
    if got.method != sent.method:
        gw.problem(f"method {got.method!r} upstream, {sent.method!r} sent")
    if bytes(got.body) != sent.body:
        gw.problem(f"body of {sent.method!r} {sent.path!r} changed on the way: "
                   f"{len(got.body)} bytes arrived, {len(sent.body)} sent")
    chunked = got.header(b"transfer-encoding") == b"chunked"
    if chunked != sent.chunked:
        gw.problem(f"sent {'chunked' if sent.chunked else 'with a length'}, "
                   f"forwarded with {got.header(b'transfer-encoding')!r}")
