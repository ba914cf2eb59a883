"""Request-smuggling and parser rules, one test id per rule, over raw sockets.

A rejected request must get 400, a closed connection, and the upstream must receive no byte.
One gateway serves the module: listener ``web`` with the defaults, listener ``lenient`` with
``rejectUnderscoreHeaders: false``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.edge._helpers import listener_gateway
from tests.support import resources as r
from tests.support.client import ConnectionClosed, RawClient, roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import build_request, chunked
from tests.support.net import free_port, poll_until
from tests.support.recording import RecordingUpstream
from tests.support.upstream import ScriptedUpstream

LENIENT_PORT = free_port()


@pytest.fixture(scope="module")
def side(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("side")


@pytest.fixture(scope="module")
def gw(module_gateways, recorder: RecordingUpstream, side: ScriptedUpstream) -> Gateway:
    lenient = {"name": "lenient", "port": LENIENT_PORT, "protocol": "HTTP",
               "address": "127.0.0.1", "limits": {"rejectUnderscoreHeaders": False}}
    return module_gateways(lambda port: r.dump(
        listener_gateway(port, extra_listeners=[lenient]),
        r.route("side", hostnames=["side.example"], rules=[r.rule(forward=r.forward("side"))]),
        r.route("main", rules=[r.rule(forward=r.forward("rec"))]),
        r.upstream("rec", recorder.port),
        r.upstream("side", side.port),
    ))


@pytest.fixture
def up(gw: Gateway, recorder: RecordingUpstream, side: ScriptedUpstream) -> RecordingUpstream:
    recorder.reset()
    side.reset()
    return recorder


def assert_400_closed_nothing_forwarded(gw: Gateway, up: RecordingUpstream, raw: bytes,
                                        method: str = "GET") -> None:
    with RawClient(gw.port, timeout=5) as client:
        client.send(raw)
        response = client.read_final(method)
        assert response.status == 400, response
        assert client.closed_by_peer(3), "connection not closed after 400"
    time.sleep(0.05)
    assert up.received == b"", up.received[:300]


REJECTED = [
    pytest.param(b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + chunked(b"hello"), id="te-in-http10"),
    pytest.param(b"GET / HTTP/1.1\r\nX: y\r\n\r\n", id="missing-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="duplicate-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", id="duplicate-host-same"),
    pytest.param(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", id="double-space-before-target"),
    pytest.param(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", id="double-space-before-version"),
    pytest.param(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", id="version-1.2"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", id="version-2.0"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
                 id="version-2.0-keep-alive"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\nProxy-Connection: keep-alive\r\n\r\n",
                 id="version-2.0-proxy-connection-keep-alive"),
    pytest.param(b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", id="version-0.9"),
    pytest.param(b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", id="version-garbage"),
    pytest.param(b"GET / http/1.1\r\nHost: a\r\n\r\n", id="version-lower-case"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
                 id="get-with-content-length-body"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + chunked(b"hello"), id="get-with-chunked-body"),
    pytest.param(b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
                 id="head-with-body"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"hello"), id="cl-and-te"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nxx",
                 id="te-final-coding-not-chunked"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
                 + chunked(b"hello"), id="te-chunked-twice"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer---Encoding: chunked\r\n"
                 b"Content-Length: 5\r\n\r\nhello", id="lookalike-transfer---encoding"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\ncontent.length: 5\r\n"
                 b"Content-Length: 5\r\n\r\nhello", id="lookalike-content.length"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n"
                 b"Content-Length: 5\r\n\r\nhello", id="lookalike-content_length"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\n\r\n", id="underscore-header"),
    pytest.param(b"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n"
                 b"Upgrade: websocket\r\nContent-Length: 5\r\n\r\nhello", id="upgrade-with-body"),
]


@pytest.mark.parametrize("raw", REJECTED)
def test_rejected_with_400_and_close(gw, up, raw: bytes) -> None:
    method = raw.split(b" ", 1)[0].decode()
    assert_400_closed_nothing_forwarded(gw, up, raw, method)


def test_absolute_form_target_routes_by_authority_and_rebuilds_host(gw, up, side) -> None:
    raw = b"GET http://side.example/abs?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n"
    with RawClient(gw.port) as client:
        client.send(raw)
        response = client.read_final()
    assert response.status == 200 and response.header("x-upstream") == "side", response
    received = side.last
    assert received.target == "/abs?q=1"
    assert received.head.get_all("host") == ["side.example"]
    assert up.received == b""


@pytest.mark.parametrize("owned", [
    pytest.param("x-forwarded-for", id="x-forwarded-for"),
    pytest.param("x-forwarded-proto", id="x-forwarded-proto"),
    pytest.param("forwarded", id="forwarded"),
])
def test_connection_cannot_delete_gateway_owned_header(gw, up, owned: str) -> None:
    response = roundtrip(gw.port, "GET", "/hop", [("Connection", f"keep-alive, {owned}")])
    assert response.status == 200, response
    received = up.last
    assert received.header(owned), f"{owned} missing upstream: {received.head.headers}"
    if owned == "x-forwarded-for":
        assert received.header(owned) == "127.0.0.1"


def test_hop_by_hop_named_in_connection_is_removed(gw, up) -> None:
    response = roundtrip(gw.port, "GET", "/hop", [("Connection", "x-secret"),
                                                  ("X-Secret", "1"), ("X-Kept", "2")])
    assert response.status == 200
    received = up.last
    assert received.header("x-secret") is None and received.header("x-kept") == "2"


def test_forged_client_cert_header_is_removed(gw, up) -> None:
    forged = 'Hash=deadbeef;Subject="CN=admin";DNS=admin.example'
    response = roundtrip(gw.port, "GET", "/xfcc", [("X-Forwarded-Client-Cert", forged)])
    assert response.status == 200
    assert up.last.header("x-forwarded-client-cert") is None


def test_pipelined_input_after_a_400_never_reaches_the_upstream(gw, up) -> None:
    bad = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
    assert_400_closed_nothing_forwarded(gw, up, bad + build_request("GET", "/behind") * 3)


def read_until_closed(client: RawClient) -> list[int]:
    """Statuses of every response until the gateway closes the connection (at most 5)."""
    statuses = []
    for _ in range(5):
        try:
            statuses.append(client.read_final(timeout=3).status)
        except ConnectionClosed:
            return statuses
    raise AssertionError(f"still open after {statuses}")


@pytest.mark.parametrize("bad", [
    pytest.param(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", id="parser-error"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="gateway-check"),
])
def test_pipelined_400_after_a_good_request_keeps_answers_in_order(gw, up, bad: bytes) -> None:
    """A valid request, a bad one, then more input in one segment: the request behind the bad
    one never reaches the upstream, and if the valid one was forwarded its answer comes before
    the 400 (else the client would take the 400 for the answer to a request that was served)."""
    with RawClient(gw.port) as client:
        client.send(build_request("GET", "/first") + bad + build_request("GET", "/behind"))
        statuses = read_until_closed(client)
    time.sleep(0.1)
    targets = [q.target for q in up.requests]
    assert "/behind" not in targets
    expected = [200, 400] if targets == ["/first"] else [400]
    assert statuses == expected, f"upstream saw {targets}, client got {statuses}"


def test_transfer_codings_before_chunked_are_forwarded(gw, up) -> None:
    body = chunked(b"gz", b"ipped")
    response = roundtrip(gw.port, "POST", "/te", [("Transfer-Encoding", "gzip, chunked")], body)
    assert response.status == 200, response
    received = up.last
    assert received.header("transfer-encoding").replace(" ", "") == "gzip,chunked"
    assert received.framing == "chunked" and received.body == b"gzipped"


def test_underscore_header_passes_when_allowed_on_the_listener(gw, up) -> None:
    response = roundtrip(LENIENT_PORT, "GET", "/u", [("X_Custom", "1")])
    assert response.status == 200, response
    assert up.last.header("x_custom") == "1"


# -- invalid upstream responses ----------------------------------------------------------------


class BadUpstream:
    """Answers every request head with ``reply`` and keeps the connection open, recording for
    each connection whether the gateway closed it."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.closed_by_gateway: list[bool] = []  # per accepted connection, in order
        self.heads = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            index = len(self.closed_by_gateway)
            self.closed_by_gateway.append(False)
            thread = threading.Thread(target=self._serve, args=(conn, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        conn.settimeout(0.2)
        data = b""
        with conn:
            for _ in range(100):  # at most ~20 s
                if self._stop.is_set():
                    return
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self.closed_by_gateway[index] = True
                    return
                data += chunk
                while b"\r\n\r\n" in data:
                    data = data.split(b"\r\n\r\n", 1)[1]
                    self.heads += 1
                    conn.sendall(self.reply)

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        for thread in self._threads:
            thread.join(timeout=2)


INVALID_RESPONSES = {
    "bad-status-code": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "two-content-lengths":
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"2\r\nab\r\n0\r\n\r\n",
    "space-in-field-name": b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n",
}


@pytest.fixture(scope="module")
def bad_gateway(module_gateways) -> Iterator[tuple[Gateway, dict[str, BadUpstream]]]:
    """One gateway for the module's invalid responses: host ``<id>.bad`` goes to an upstream
    of its own answering ``INVALID_RESPONSES[id]``, so each case counts its own heads and
    connections."""
    upstreams = {name: BadUpstream(reply) for name, reply in INVALID_RESPONSES.items()}
    try:
        gateway = module_gateways(lambda port: r.dump(r.gateway(port), *(
            resource for name, upstream in upstreams.items() for resource in (
                r.route(f"bad-{name}", hostnames=[f"{name}.bad"],
                        rules=[r.rule(forward=r.forward(f"bad-{name}"))]),
                r.upstream(f"bad-{name}", upstream.port)))))
        yield gateway, upstreams
    finally:
        for upstream in upstreams.values():
            upstream.stop()


@pytest.mark.parametrize("case", list(INVALID_RESPONSES))
def test_invalid_upstream_response_gives_502_and_closes_that_connection(
    bad_gateway: tuple[Gateway, dict[str, BadUpstream]], case: str
) -> None:
    gateway, upstreams = bad_gateway
    upstream = upstreams[case]
    assert roundtrip(gateway.port, "GET", "/one", host=f"{case}.bad").status == 502
    poll_until(lambda: upstream.closed_by_gateway[:1] == [True], 5,
               message="gateway closed the upstream connection")
    assert roundtrip(gateway.port, "GET", "/two", host=f"{case}.bad").status == 502
    assert upstream.heads == 2 and len(upstream.closed_by_gateway) == 2  # a new connection
