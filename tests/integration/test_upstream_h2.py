"""Upstream.spec.protocol HTTP2 (#13 item 3): HTTP/1.1 clients through a real gateway process to
a real HTTP/2 upstream (h2c with prior knowledge, and h2 over TLS with ALPN): requests and
bodies both ways, multiplexing on few connections, the peer's max concurrent streams,
GOAWAY, RST_STREAM, trailers, flow control on large bodies and with a client that stops
reading, a gRPC answer cut by the route's timeout (HTTP/2 and HTTP/1.1 clients)."""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from h2.errors import ErrorCodes

from tests.support import resources as r
from tests.support.client import ConnectionClosed, RawClient, roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import chunked
from tests.support.h2_upstream import H2Reply, H2Request, H2Upstream, echo_h2, h2_server_context
from tests.support.h2client import H2Client
from tests.support.net import poll_until
from tests.support.tls import Pki
from tests.support.upstream import pattern_body

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def h2c() -> Iterator[H2Upstream]:
    upstream = H2Upstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def narrow() -> Iterator[H2Upstream]:
    """An upstream allowing two concurrent streams per connection."""
    upstream = H2Upstream(max_concurrent_streams=2).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def h2tls(pki: Pki) -> Iterator[H2Upstream]:
    cert = pki.issue("h2-upstream", "localhost")
    upstream = H2Upstream(h2_server_context(str(cert.cert), str(cert.key))).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gw(module_gateways, h2c: H2Upstream, narrow: H2Upstream, h2tls: H2Upstream,
       pki: Pki) -> Gateway:
    def config(port: int) -> str:
        rules = [
            r.rule({"prefix": "/narrow"}, forward=r.forward("narrow")),
            r.rule({"prefix": "/tls"}, forward=r.forward("tls")),
            r.rule({"prefix": "/late"}, forward=r.forward("h2c", timeout="200ms")),
            r.rule({"prefix": "/api"}, forward=r.forward("h2c", rewrite={"prefix": "/v1"})),
            r.rule({"prefix": "/"}, forward=r.forward("h2c", timeout="20s")),
        ]
        return r.dump(
            r.gateway(port), r.route("all", rules=rules),
            r.upstream("h2c", h2c.port, protocol="HTTP2"),
            r.upstream("narrow", narrow.port, protocol="HTTP2"),
            r.upstream("tls", h2tls.port, protocol="HTTP2",
                       tls={"caFile": str(pki.ca_file), "sni": "localhost"}),
        )

    return module_gateways(config)


@pytest.fixture
def up(gw: Gateway, h2c: H2Upstream) -> H2Upstream:
    h2c.reset()
    return h2c


def _echo(response) -> dict:
    assert response.status == 200, response.body[:300]
    return json.loads(response.body)


def test_get_reaches_the_upstream_over_h2c(gw: Gateway, up: H2Upstream) -> None:
    response = roundtrip(gw.port, "GET", "/hello?x=1", {"Cookie": "a=1; b=2",
                                                         "TE": "trailers",
                                                         "Connection": "keep-alive, x-hop",
                                                         "X-Hop": "1", "X-Keep": "yes"})
    doc = _echo(response)
    (request,) = up.wait_for_requests(1)
    assert doc["method"] == "GET" and doc["path"] == "/hello?x=1"
    assert request.header(":scheme") == "http"
    assert request.header(":authority") == "test.local"
    assert request.header("cookie") == "a=1; b=2"
    assert request.header("te") == "trailers"
    assert request.header("x-keep") == "yes"
    assert request.header("x-hop") is None
    names = [n for n, _ in request.headers]
    assert not {"host", "connection", "keep-alive", "transfer-encoding"} & set(names)
    assert request.header("x-forwarded-for") == "127.0.0.1"


def test_the_route_rewrite_applies_to_the_path(gw: Gateway, up: H2Upstream) -> None:
    _echo(roundtrip(gw.port, "GET", "/api/items?q=2"))
    assert up.wait_for_requests(1)[0].path == "/v1/items?q=2"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_post_bodies_go_up(gw: Gateway, up: H2Upstream, framing: str) -> None:
    body = pattern_body(100_000)
    if framing == "length":
        response = roundtrip(gw.port, "POST", "/upload", body=body)
    else:
        response = roundtrip(gw.port, "POST", "/upload", {"Transfer-Encoding": "chunked"},
                             chunked(body[:40_000], body[40_000:]), content_length=False)
    doc = _echo(response)
    assert doc["body_size"] == len(body)
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_concurrent_requests_share_one_connection(gw: Gateway, up: H2Upstream) -> None:
    before = up.connections
    up.handler = lambda req: H2Reply(body=b"ok", delay=0.2)

    def one(i: int) -> int:
        return roundtrip(gw.port, "GET", f"/c/{i}").status

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(one, range(40)))
    assert statuses == [200] * 40
    conns = {req.conn_id for req in up.requests}
    assert len(conns) <= 2  # multiplexed (a second one only if the first was not ready)
    assert up.connections - before <= 2


def test_max_concurrent_streams_opens_more_connections(gw: Gateway, narrow: H2Upstream) -> None:
    narrow.reset(lambda req: H2Reply(body=b"ok", delay=0.5))
    start = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda i: roundtrip(gw.port, "GET", f"/narrow/{i}").status,
                                 range(6)))
    assert statuses == [200] * 6
    assert time.monotonic() - start < 1.4  # all six at once, not two at a time
    per_conn: dict[int, int] = {}
    for req in narrow.requests:
        per_conn[req.conn_id] = per_conn.get(req.conn_id, 0) + 1
    assert len(per_conn) >= 3 and max(per_conn.values()) <= 6
    assert not narrow.resets  # no stream was refused for going over the limit


def test_goaway_mid_traffic_fails_no_idempotent_request(gw: Gateway, up: H2Upstream) -> None:
    up.handler = lambda req: H2Reply(body=req.path.encode(), delay=0.05)
    up.goaway_after = 5  # every connection goes away after five requests
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda i: roundtrip(gw.port, "GET", f"/g/{i}"), range(60)))
    assert [resp.status for resp in responses] == [200] * 60
    assert [resp.body for resp in responses] == [f"/g/{i}".encode() for i in range(60)]
    assert len({req.conn_id for req in up.requests}) >= 12


def test_a_refused_stream_is_sent_again_more_than_once(gw: Gateway, up: H2Upstream) -> None:
    """REFUSED_STREAM says the upstream never processed the stream: the request is sent again,
    and again if the next stream is refused too (as when it lands on the next connection to
    go away), a bounded number of times."""
    refusals: dict[str, int] = {}

    def refuse_twice(req: H2Request) -> H2Reply:
        refusals[req.path] = refusals.get(req.path, 0) + 1
        if refusals[req.path] <= 2:
            return H2Reply(reset=int(ErrorCodes.REFUSED_STREAM))
        return H2Reply(body=req.path.encode())

    up.handler = refuse_twice
    response = roundtrip(gw.port, "GET", "/refused/twice")
    assert (response.status, response.body) == (200, b"/refused/twice")
    assert refusals["/refused/twice"] == 3


def test_a_stream_refused_every_time_ends_in_502(gw: Gateway, up: H2Upstream) -> None:
    up.handler = lambda req: H2Reply(reset=int(ErrorCodes.REFUSED_STREAM))
    assert roundtrip(gw.port, "GET", "/refused/always").status == 502
    assert [req.path for req in up.requests] == ["/refused/always"] * 5  # 1 + 4 sent again
    up.reset()
    assert roundtrip(gw.port, "GET", "/after").status == 200


def test_upstream_rst_stream_is_a_502(gw: Gateway, up: H2Upstream) -> None:
    up.handler = lambda req: H2Reply(reset=int(ErrorCodes.INTERNAL_ERROR))
    assert roundtrip(gw.port, "GET", "/reset").status == 502
    up.reset()
    assert roundtrip(gw.port, "GET", "/after").status == 200  # the connection still serves


def test_an_answer_crossing_our_reset_is_ignored(gw: Gateway, up: H2Upstream) -> None:
    """The gateway resets a stream at its timeout; the upstream's answer, already on its way,
    arrives on the reset stream. RFC 9113 §5.1: such frames are ignored, the connection and
    its other streams carry on (h2 used to call the late HEADERS a new inbound stream beyond
    our MAX_CONCURRENT_STREAMS of 0 and tear the connection down with PROTOCOL_ERROR)."""
    def handler(request: H2Request) -> H2Reply:
        if request.path == "/late":
            return H2Reply(body=b"late", delay=0.5, after_reset=True)
        if request.path == "/other":
            return H2Reply(body=b"on time", delay=0.6)
        return echo_h2(request)

    up.handler = handler
    with ThreadPoolExecutor(1) as pool:
        assert roundtrip(gw.port, "GET", "/late").status == 504  # at 0.2 s; answered at 0.5 s
        # a stream opened after the reset (h2 forgets the reset one when counting streams)
        # and still open when the crossing answer arrives
        other = pool.submit(roundtrip, gw.port, "GET", "/other")
        poll_until(lambda: up.crossing_answers == 1, 5, message="the crossing answer written")
        response = other.result()
    assert (response.status, response.body) == (200, b"on time")
    late_request, other_request = up.requests  # /other was not retried elsewhere
    assert (late_request.path, other_request.path) == ("/late", "/other")
    assert late_request.conn_id == other_request.conn_id
    assert (late_request.conn_id, late_request.stream_id, ErrorCodes.CANCEL) in up.resets
    assert _echo(roundtrip(gw.port, "GET", "/after"))["conn"] == late_request.conn_id


def test_response_trailers_reach_a_chunked_client(gw: Gateway, up: H2Upstream) -> None:
    up.handler = lambda req: H2Reply(
        headers=[("content-type", "application/grpc")], body=b"\x00\x00\x00\x00\x02hi",
        trailers=[("grpc-status", "0"), ("grpc-message", "fine")])
    response = roundtrip(gw.port, "POST", "/pkg.Svc/Call", {"TE": "trailers"}, b"\x00" * 5)
    assert response.status == 200
    assert response.body == b"\x00\x00\x00\x00\x02hi"
    assert response.framing == "chunked"
    assert ("grpc-status", "0") in response.trailers
    assert ("grpc-message", "fine") in response.trailers


GRPC_CALL = [("content-type", "application/grpc"), ("te", "trailers")]
GRPC_MESSAGE = b"\x00\x00\x00\x00\x02hi"  # a Length-Prefixed-Message: flag, length, bytes
INSIDE_A_MESSAGE = GRPC_MESSAGE + GRPC_MESSAGE[:6]  # the next message's prefix and a byte


def _grpc_answer_stalled_after(body: bytes) -> H2Reply:
    """A gRPC answer whose trailers come well after /late's 200 ms timeout."""
    return H2Reply(headers=[("content-type", "application/grpc")], body=body,
                   trailers=[("grpc-status", "0")], trailers_delay=5.0)


def _upstream_cancelled(up: H2Upstream) -> None:
    (request,) = up.wait_for_requests(1)
    poll_until(lambda: (request.conn_id, request.stream_id, ErrorCodes.CANCEL) in up.resets,
               5, message="the upstream stream reset with CANCEL")


@pytest.mark.parametrize(("body", "ends_with_trailers"), [
    pytest.param(GRPC_MESSAGE, True, id="between-messages"),
    pytest.param(INSIDE_A_MESSAGE, False, id="inside-a-message"),
])
def test_a_grpc_answer_past_the_timeout_over_http2(gw: Gateway, up: H2Upstream, body: bytes,
                                                   ends_with_trailers: bool) -> None:
    """The route's timeout passes after the gRPC answer began (an HTTP/2 client): between
    two messages the call ends with DEADLINE_EXCEEDED in trailers, inside one with RST_STREAM
    CANCEL (what gRPC's PROTOCOL-HTTP2.md asks when the payload is incomplete; a gRPC client
    whose deadline passed reads it as DEADLINE_EXCEEDED). It was RST_STREAM INTERNAL_ERROR,
    which gRPC clients report as INTERNAL. The upstream stream is cancelled either way."""
    up.handler = lambda req: _grpc_answer_stalled_after(body)
    with H2Client(gw.port) as client:
        started = time.monotonic()
        answer = client.wait(client.request("POST", "/late/pkg.Svc/Call", headers=GRPC_CALL,
                                            body=b"\x00" * 5))
        elapsed = time.monotonic() - started
    assert answer.status == 200 and answer.body == body
    if ends_with_trailers:
        assert answer.reset is None and answer.ended
        assert (b"grpc-status", b"4") in answer.trailers
        assert (b"grpc-message", b"upstream timed out") in answer.trailers
    else:
        assert answer.reset == ErrorCodes.CANCEL and not answer.trailers
    assert elapsed < 2
    _upstream_cancelled(up)


@pytest.mark.parametrize(("body", "ends_with_trailers"), [
    pytest.param(GRPC_MESSAGE, True, id="between-messages"),
    pytest.param(INSIDE_A_MESSAGE, False, id="inside-a-message"),
])
def test_a_grpc_answer_past_the_timeout_over_http11(gw: Gateway, up: H2Upstream, body: bytes,
                                                    ends_with_trailers: bool) -> None:
    """The same for an HTTP/1.1 client: between two messages the chunked answer ends with
    DEADLINE_EXCEEDED in its trailers (the connection was cut without a last chunk);
    inside a message the connection is cut, HTTP/1.1 having no reset of one exchange."""
    up.handler = lambda req: _grpc_answer_stalled_after(body)
    with RawClient(gw.port) as client:
        client.request("POST", "/late/pkg.Svc/Call", GRPC_CALL, b"\x00" * 5)
        if ends_with_trailers:
            response = client.read_final("POST")
            assert (response.status, response.framing, response.body) == (200, "chunked", body)
            assert ("grpc-status", "4") in response.trailers
            assert ("grpc-message", "upstream timed out") in response.trailers
        else:
            with pytest.raises(ConnectionClosed):
                client.read_final("POST")
    _upstream_cancelled(up)


def test_request_trailers_go_up(gw: Gateway, up: H2Upstream) -> None:
    body = chunked(b"abc", trailers=[("x-checksum", "42")])
    response = roundtrip(gw.port, "POST", "/t", {"Transfer-Encoding": "chunked"}, body,
                         content_length=False)
    doc = _echo(response)
    assert doc["body_size"] == 3
    assert ["x-checksum", "42"] in doc["trailers"]


def test_large_bodies_both_ways(gw: Gateway, up: H2Upstream) -> None:
    up.handler = lambda req: H2Reply(body_size=5 * MIB)
    upload = pattern_body(5 * MIB)
    response = roundtrip(gw.port, "PUT", "/big", body=upload, timeout=30)
    assert response.status == 200
    assert response.body == pattern_body(5 * MIB)
    (request,) = up.wait_for_requests(1)
    assert request.body_size == 5 * MIB
    assert request.body_sha256 == hashlib.sha256(upload).hexdigest()


def _send_queue(local_port: int, remote_port: int) -> int:
    """Bytes the kernel holds for sending on the 127.0.0.1 connection between these ports."""
    local, remote = f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[4].split(":")[0], 16)
    raise AssertionError(f"no connection {local} -> {remote}")


def test_a_client_that_stops_reading_stalls_only_its_stream(gw: Gateway,
                                                             up: H2Upstream) -> None:
    """The upstream is stopped, not buffered: beyond what the kernel holds for the client
    (its send buffer grows up to net.ipv4.tcp_wmem's maximum, 4 MiB here), the gateway has
    taken at most the stream's window and a read or two from the upstream."""
    up.handler = lambda req: H2Reply(body_size=16 * MIB if req.path == "/slow" else 2)
    with RawClient(gw.port, timeout=30, rcvbuf=16384) as slow:
        slow.request("GET", "/slow")
        up.wait_for_requests(1)
        time.sleep(0.5)  # the slow stream's window fills; the client reads nothing
        held = up.body_sent
        time.sleep(0.3)
        assert up.body_sent == held < 16 * MIB  # stopped
        in_kernel = _send_queue(gw.port, slow.local_port)
        assert held - in_kernel < 1 * MIB, f"sent {held}, in the kernel's queue {in_kernel}"
        started = time.monotonic()
        for i in range(10):
            assert roundtrip(gw.port, "GET", f"/fast/{i}").status == 200
        assert time.monotonic() - started < 3
        assert len({req.conn_id for req in up.requests}) == 1  # the same connection
        response = slow.read_final()
    assert response.body == pattern_body(16 * MIB)


def test_a_client_that_leaves_cancels_its_stream(gw: Gateway, up: H2Upstream) -> None:
    up.handler = lambda req: H2Reply(body=b"late", delay=3)
    with RawClient(gw.port, timeout=5) as client:
        client.request("GET", "/leave")
        up.wait_for_requests(1)
        # a reset, not a FIN (after a FIN the client still gets the answer it waits for)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    poll_until(lambda: any(code == ErrorCodes.CANCEL for _, _, code in up.resets), 5,
               message="RST_STREAM(CANCEL) upstream")


def test_h2_over_tls_with_alpn(gw: Gateway, h2tls: H2Upstream) -> None:
    h2tls.reset()
    doc = _echo(roundtrip(gw.port, "POST", "/tls/x", body=b"secret"))
    assert doc["body_size"] == 6
    (request,) = h2tls.wait_for_requests(1)
    assert request.header(":scheme") == "https"


def test_an_upstream_without_h2_fails_cleanly(gateways, upstreams) -> None:
    http1 = upstreams("plain")  # an HTTP/1.1 server: refuses the h2 preface

    def config(port: int) -> str:
        rules = [r.rule({"prefix": "/"}, forward=r.forward("h1"))]
        return r.dump(r.gateway(port), r.route("all", rules=rules),
                      r.upstream("h1", http1.port, protocol="HTTP2"))

    gateway = gateways(config)
    assert roundtrip(gateway.port, "GET", "/").status == 502
    assert roundtrip(gateway.port, "GET", "/").status == 502  # and again: the gateway serves
