"""HTTP/1.1 proxying over real sockets: connection reuse, pipelining, body streaming and
framing, hop-by-hop fields, upstream failures and malformed client requests.

One gateway and one scripted upstream serve the whole module; each test scripts the upstream.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from tests.support import resources as r
from tests.support.client import ConnectionClosed, RawClient, roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import build_request, chunked
from tests.support.net import free_port
from tests.support.upstream import Reply, ScriptedUpstream, pattern_body

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def shared_upstream(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("main")


@pytest.fixture(scope="module")
def gw(module_gateways, shared_upstream: ScriptedUpstream) -> Gateway:
    closed_port = free_port()  # nobody listens here
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("main", hostnames=["test.local"], rules=[
            r.rule({"prefix": "/slow"}, forward=r.forward("main", timeout="300ms")),
            r.rule({"prefix": "/closed"}, forward=r.forward("closed")),
            r.rule(forward=r.forward("main")),
        ]),
        r.route("abs", hostnames=["abs.example"], rules=[r.rule(forward=r.forward("main"))]),
        r.upstream("main", shared_upstream.port),
        r.upstream("closed", closed_port),
    ))


@pytest.fixture
def up(shared_upstream: ScriptedUpstream, gw: Gateway) -> ScriptedUpstream:
    shared_upstream.reset()
    return shared_upstream


def worker_pid(gw: Gateway) -> int:
    return gw.worker_pids[0]


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


# -- 1. keep-alive ---------------------------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_client_connection(gw, up) -> None:
    with RawClient(gw.port) as client:
        for i in range(5):
            client.request("GET", f"/ka/{i}")
            response = client.read_final()
            assert response.status == 200, response
            assert response.header("connection") != "close"
    assert [q.target for q in up.requests] == [f"/ka/{i}" for i in range(5)]


def test_a_connection_idle_past_the_release_serves_its_next_request_alike(gw, up) -> None:
    """After about a second idle the connection drops its caches (IDLE_RELEASE); the next
    request on it makes them again and is forwarded the same way."""
    with RawClient(gw.port) as client:
        seen = []
        for pause in (0.0, 1.8, 0.0):
            time.sleep(pause)
            client.request("GET", "/idle", headers={"host": "test.local"})
            assert client.read_final().status == 200
            request = up.requests[-1]
            seen.append((request.header("host"), request.header("x-forwarded-for"),
                         request.header("x-forwarded-host")))
    assert seen[0] == seen[1] == seen[2] and seen[0][1] == "127.0.0.1", seen


def test_a_request_begun_in_the_read_that_ended_the_last_is_parsed_whole(gw, up) -> None:
    """An idle connection gives its parser back to the worker (RequestReader) only when no
    byte of a next request has been read: one whose read ended inside the next request's
    method keeps its parser, while other connections' requests take and give back parsers,
    and its request is parsed whole when the rest comes."""
    up.handler = lambda q: Reply(body=q.target.encode())
    with RawClient(gw.port) as split, RawClient(gw.port) as other:
        for tail in (b"G", b"GE", b"GET", b"GET "):
            split.send(build_request("POST", "/first", body=b"abc") + tail)
            assert split.read_final().body == b"/first"
            for i in range(3):  # parsers lent to another connection meanwhile
                other.request("GET", f"/other/{i}")
                assert other.read_final().body == f"/other/{i}".encode()
            time.sleep(0.05)
            split.send(build_request("GET", "/second")[len(tail):])
            response = split.read_final()
            assert response.status == 200 and response.body == b"/second", (tail, response)


def test_a_body_that_ends_a_read_without_a_line_end_lets_the_parser_go(gw, up) -> None:
    """A request whose body ends its read (no line end after it) is a message boundary:
    the next requests on the connection, and on others, are parsed alike."""
    up.handler = lambda q: Reply(body=q.target.encode() + b":" + q.body)
    with RawClient(gw.port) as first, RawClient(gw.port) as second:
        for i in range(4):
            for client, name in ((first, "a"), (second, "b")):
                client.send(build_request("POST", f"/{name}{i}", body=b"xyz"))
                assert client.read_final().body == f"/{name}{i}:xyz".encode()


def test_sequential_requests_reuse_one_pooled_upstream_connection(gw, up) -> None:
    for c in range(3):
        with RawClient(gw.port) as client:
            for i in range(3):
                client.request("GET", f"/pool/{c}/{i}")
                assert client.read_final().status == 200
    requests = up.wait_for_requests(9)
    assert len({q.conn_id for q in requests}) == 1, [q.conn_id for q in requests]


# -- 2. pipelining ---------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(gw, up) -> None:
    up.handler = lambda q: Reply(body=q.target.encode(), delay=0.3 if q.path == "/p1" else 0)
    with RawClient(gw.port) as client:
        client.send(b"".join(build_request("GET", f"/p{i}") for i in (1, 2, 3)))
        bodies = [client.read_final().body for _ in range(3)]
    assert bodies == [b"/p1", b"/p2", b"/p3"]


def test_pipelined_requests_with_bodies_keep_their_bodies(gw, up) -> None:
    up.handler = lambda q: Reply(body=q.target.encode() + b":" + q.body,
                                 delay=0.2 if q.path == "/b1" else 0)
    with RawClient(gw.port) as client:
        client.send(
            build_request("POST", "/b1", body=b"one")
            + build_request("POST", "/b2", [("Transfer-Encoding", "chunked")],
                            chunked(b"tw", b"o"))
            + build_request("GET", "/b3")
        )
        bodies = [client.read_final().body for _ in range(3)]
    assert bodies == [b"/b1:one", b"/b2:two", b"/b3:"]


# -- 3. request bodies -----------------------------------------------------------------------


def test_content_length_body_arrives_intact(gw, up) -> None:
    body = pattern_body(300_000)
    response = roundtrip(gw.port, "POST", "/upload", body=body)
    assert response.status == 200
    received = up.last
    assert received.framing == "length"
    assert received.header("content-length") == str(len(body))
    assert received.body == body


def test_chunked_body_is_rechunked_and_its_trailers_passed_on(gw, up) -> None:
    """Trailers travel with the body (gRPC needs them); fields that must never be trailers
    (RFC 9110 6.5.1: framing, routing, authentication...) are dropped."""
    pieces = [b"alpha-" * 10, b"b", pattern_body(70_000)]
    with RawClient(gw.port) as client:
        client.request(
            "POST", "/chunked", [("Transfer-Encoding", "chunked"), ("Trailer", "x-checksum")],
            chunked(*pieces, trailers=[("X-Checksum", "abc"), ("X-Other-Trailer", "1"),
                                       ("Host", "evil"), ("Authorization", "evil")]),
        )
        assert client.read_final().status == 200
    received = up.last
    assert received.framing == "chunked"
    assert received.header("transfer-encoding") == "chunked"
    assert received.body == b"".join(pieces)
    assert received.trailers == [("x-checksum", "abc"), ("x-other-trailer", "1")]
    assert b"evil" not in received.raw_body
    assert "trailer" not in received.head.names()


def test_framing_field_in_trailers_is_refused(gw, up) -> None:
    """A Content-Length among the trailers of a chunked body (llhttp refuses it): the
    request is answered 400 at once, not left waiting for a body that cannot complete."""
    with RawClient(gw.port, timeout=5) as client:
        client.request("POST", "/bad-trailer", [("Transfer-Encoding", "chunked")],
                       chunked(b"abc", trailers=[("Content-Length", "5")]))
        assert client.read_final().status == 400
        assert client.closed_by_peer()


def test_chunk_extensions_are_not_forwarded(gw, up) -> None:
    with RawClient(gw.port) as client:
        client.request("POST", "/ext", [("Transfer-Encoding", "chunked")],
                       b"5;name=value\r\nhello\r\n0;last=1\r\n\r\n")
        assert client.read_final().status == 200
    assert up.last.body == b"hello"
    assert b"name=value" not in up.last.raw_body


def test_large_upload_streams_without_buffering_it_whole(gw, up) -> None:
    size = 20 * MiB
    body = pattern_body(size)
    pid = worker_pid(gw)
    rss_before = vm_kib(pid, "VmRSS")
    hwm_before = vm_kib(pid, "VmHWM")
    with RawClient(gw.port, timeout=60) as client:
        client.request("PUT", "/big", [("Content-Length", str(size))])
        view = memoryview(body)
        for start in range(0, size, MiB):
            client.send(view[start:start + MiB])
        response = client.read_final(timeout=60)
    assert response.status == 200
    received = up.last
    assert received.body_size == size
    assert received.body_sha256 == hashlib.sha256(body).hexdigest()
    # Buffering the body whole would need at least 20 MiB; streaming needs a few pieces.
    peak_growth_mib = (vm_kib(pid, "VmHWM") - hwm_before) / 1024
    rss_growth_mib = (vm_kib(pid, "VmRSS") - rss_before) / 1024
    assert peak_growth_mib < 10, f"peak RSS grew {peak_growth_mib:.1f} MiB"
    assert rss_growth_mib < 10, f"RSS grew {rss_growth_mib:.1f} MiB"


def test_slow_reader_gets_a_large_response_complete(gw, up) -> None:
    size = 20 * MiB
    up.reply(Reply(body_size=size))
    pid = worker_pid(gw)
    rss_before = vm_kib(pid, "VmRSS")
    with RawClient(gw.port, timeout=60, rcvbuf=64 * 1024) as client:
        client.request("GET", "/large")
        # The client reads nothing: the upstream must stall on backpressure.
        last = -1
        for _ in range(50):
            time.sleep(0.1)
            if up.sent_bytes == last:
                break
            last = up.sent_bytes
        stalled_at = up.sent_bytes
        assert stalled_at < size, "the upstream wrote everything while the client read nothing"
        rss_growth_mib = (vm_kib(pid, "VmRSS") - rss_before) / 1024
        response = client.read_final(timeout=60)
    assert response.status == 200
    assert len(response.body) == size
    assert response.body == pattern_body(size)
    assert rss_growth_mib < 10, f"RSS grew {rss_growth_mib:.1f} MiB while the client stalled"


# -- 4. response framing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream_framing", "client_version", "client_framing"),
    [
        pytest.param("length", "HTTP/1.1", "length", id="length-to-1.1"),
        pytest.param("chunked", "HTTP/1.1", "chunked", id="chunked-to-1.1"),
        pytest.param("close", "HTTP/1.1", "chunked", id="close-delimited-to-1.1-is-chunked"),
        pytest.param("length", "HTTP/1.0", "length", id="length-to-1.0"),
        pytest.param("close", "HTTP/1.0", "close", id="close-delimited-to-1.0"),
        pytest.param("chunked", "HTTP/1.0", "close", id="chunked-to-1.0-is-close-delimited"),
    ],
)
def test_response_framing(gw, up, upstream_framing, client_version, client_framing) -> None:
    body = pattern_body(100_000)
    trailers = [("x-trailer", "t")] if upstream_framing == "chunked" else []
    up.reply(Reply(body=body, framing=upstream_framing, trailers=trailers))
    with RawClient(gw.port) as client:
        client.request("GET", "/framing", version=client_version)
        response = client.read_final()
        assert response.status == 200
        assert response.framing == client_framing, response
        assert response.body == body
        # trailers go on where both sides frame by chunks; elsewhere there is no place for them
        assert response.trailers == (trailers if client_framing == "chunked" else [])
        if client_version == "HTTP/1.0" and client_framing != "close":
            assert client.closed_by_peer(), "HTTP/1.0 without keep-alive must be closed"
        elif client_version == "HTTP/1.1":  # still usable
            up.reset()
            client.request("GET", "/again")
            assert client.read_final().status == 200


def test_http10_keep_alive_client_keeps_its_connection(gw, up) -> None:
    with RawClient(gw.port) as client:
        for i in range(2):
            client.request("GET", f"/ka10/{i}", [("Connection", "keep-alive")],
                           version="HTTP/1.0")
            response = client.read_final()
            assert response.status == 200
            assert response.framing == "length"
            assert (response.header("connection") or "").lower() == "keep-alive"


@pytest.mark.parametrize("framing", [pytest.param("length", id="content-length"),
                                     pytest.param("chunked", id="chunked")])
def test_head_response_has_no_body_and_keeps_the_connection(gw, up, framing) -> None:
    up.reply(Reply(body_size=1234, framing=framing))
    with RawClient(gw.port) as client:
        client.request("HEAD", "/head")
        head = client.read_final("HEAD")
        assert head.status == 200
        if framing == "length":
            assert head.header("content-length") == "1234"
        assert head.body == b""
        up.reset()
        client.request("GET", "/after-head")
        after = client.read_final()
    assert after.status == 200
    assert b"/after-head" in after.body  # no stray HEAD body bytes were read as this response


@pytest.mark.parametrize("status", [pytest.param(204, id="204"), pytest.param(304, id="304")])
def test_no_body_statuses(gw, up, status) -> None:
    up.reply(Reply(status=status, framing="none", headers=[("etag", '"x"')]))
    with RawClient(gw.port) as client:
        client.request("GET", "/nobody")
        response = client.read_final()
        assert response.status == status
        assert response.header("transfer-encoding") is None
        assert response.header("content-length") in (None, "0")
        up.reset()
        client.request("GET", "/after")
        after = client.read_final()  # would fail to parse if a body had been sent
    assert after.status == 200
    assert b"/after" in after.body


def test_upstream_interim_100_is_not_forwarded(gw, up) -> None:
    up.reply(Reply(body=b"final", interim=[100]))
    with RawClient(gw.port) as client:
        client.request("GET", "/interim")
        response = client.read_response()
    assert response.status == 200
    assert response.body == b"final"


def test_expect_100_continue_gets_continue_then_body_reaches_upstream(gw, up) -> None:
    body = b"payload after continue"
    with RawClient(gw.port) as client:
        client.request("POST", "/expect", [("Expect", "100-continue"),
                                           ("Content-Length", str(len(body)))])
        interim = client.read_response(timeout=5)
        assert interim.status == 100
        client.send(body)
        response = client.read_final()
    assert response.status == 200
    assert up.last.body == body
    assert up.last.header("expect") is None


# -- 5. hop-by-hop fields --------------------------------------------------------------------

HOP_BY_HOP = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
              "proxy-connection"]


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param("keep-alive, x-secret", id="keep-alive"),
        pytest.param("close, x-secret", id="close"),
    ],
)
def test_hop_by_hop_request_fields_are_not_forwarded(gw, up, connection) -> None:
    with RawClient(gw.port) as client:
        client.request("GET", "/hop", [
            ("Connection", connection), ("X-Secret", "s3cret"), ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"), ("Trailer", "x-t"), ("Proxy-Connection", "keep-alive"),
            ("X-Kept", "yes"),
        ])
        response = client.read_final()
        assert response.status == 200
        if connection.startswith("close"):
            assert client.closed_by_peer()
    names = up.last.head.names()
    assert not names & {*HOP_BY_HOP, "x-secret"} - {"te"}, up.last.head.headers
    assert up.last.head.get_all("te") == ["trailers"]  # the one TE value a proxy passes on
    assert up.last.header("x-kept") == "yes"


def test_te_other_than_trailers_is_not_forwarded(gw, up) -> None:
    response = roundtrip(gw.port, "GET", "/te", [("TE", "gzip, deflate;q=0.5")])
    assert response.status == 200
    assert "te" not in up.last.head.names()


def test_upgrade_field_without_connection_upgrade_is_not_forwarded(gw, up) -> None:
    """Without ``Connection: upgrade`` an Upgrade field asks for nothing and is dropped."""
    response = roundtrip(gw.port, "GET", "/upgrade", [("Upgrade", "foo/1")])
    assert response.status == 200
    assert "upgrade" not in up.last.head.names()


def test_hop_by_hop_response_fields_are_not_forwarded(gw, up) -> None:
    up.reply(Reply(body=b"ok", headers=[
        ("Connection", "x-up-secret"), ("X-Up-Secret", "1"), ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"), ("Trailer", "x-t"), ("Upgrade", "foo"),
        ("Proxy-Connection", "keep-alive"), ("X-Up-Kept", "yes"),
    ]))
    with RawClient(gw.port) as client:
        client.request("GET", "/hop-response")
        response = client.read_final()
        assert response.status == 200
        names = response.head.names()
        assert not names & {"keep-alive", "te", "trailer", "upgrade", "proxy-connection",
                            "x-up-secret", "transfer-encoding"}, response.headers
        assert response.header("connection") in (None, "keep-alive")
        assert response.header("x-up-kept") == "yes"
        up.reset()
        client.request("GET", "/after")  # the upstream's Connection did not close ours
        assert client.read_final().status == 200


# -- 7. upstream failures --------------------------------------------------------------------


def then_still_usable(client: RawClient, up: ScriptedUpstream) -> None:
    """The client connection serves the next request with its own response."""
    up.reset()
    client.request("GET", "/next")
    response = client.read_final()
    assert response.status == 200
    assert b'"/next"' in response.body


def test_connect_failure_is_502(gw, up) -> None:
    with RawClient(gw.port) as client:
        client.request("GET", "/closed")
        assert client.read_final().status == 502
        then_still_usable(client, up)


def test_garbage_from_upstream_is_502(gw, up) -> None:
    up.reply(Reply(raw=b"this is not http\r\n\r\n"))
    with RawClient(gw.port) as client:
        client.request("GET", "/garbage")
        assert client.read_final().status == 502
        then_still_usable(client, up)


@pytest.mark.parametrize("status", [b"999", b"600", b"099", b"000"])
def test_an_upstream_status_outside_100_to_599_is_502(gw, up, status: bytes) -> None:
    """RFC 9110 §15: a status code is 100-599; llhttp parses any three digits."""
    up.reply(Reply(raw=b"HTTP/1.1 " + status + b" X\r\ncontent-length: 2\r\n\r\nok"))
    with RawClient(gw.port) as client:
        client.request("GET", "/odd-status")
        assert client.read_final().status == 502
        then_still_usable(client, up)


def test_upstream_closing_idle_pooled_connections_fails_nothing(gw, up) -> None:
    """The upstream hangs up after each response without saying so: the pooled connection
    is stale by the next request, which must still succeed."""
    up.reply(Reply(body=b"once", hangup=True))
    with RawClient(gw.port) as client:
        for i in range(5):
            client.request("GET", f"/stale/{i}")
            response = client.read_final()
            assert (response.status, response.body) == (200, b"once")
            time.sleep(0.05)  # let the close arrive before the next request
    assert len({q.conn_id for q in up.requests}) == 5


def test_slow_upstream_is_504_after_route_timeout(gw, up) -> None:
    up.reply(Reply(body=b"late", delay=1.5))
    with RawClient(gw.port) as client:
        started = time.monotonic()
        client.request("GET", "/slow/x")
        response = client.read_final()
        elapsed = time.monotonic() - started
        assert response.status == 504
        assert 0.25 <= elapsed < 1.4, elapsed
        then_still_usable(client, up)  # and the late answer never shows up as this one


def test_no_matching_route_is_404(gw, up) -> None:
    assert roundtrip(gw.port, "GET", "/", host="unknown.example").status == 404
    assert up.requests == []


@pytest.mark.parametrize("framing", [pytest.param("length", id="content-length"),
                                     pytest.param("chunked", id="chunked")])
def test_truncated_upstream_response_closes_the_client_connection(gw, up, framing) -> None:
    up.reply(Reply(body_size=200_000, truncate=10_000, framing=framing))
    with RawClient(gw.port) as client:
        client.request("GET", "/truncated")
        with pytest.raises(ConnectionClosed):
            client.read_final()


# -- 8. malformed client requests --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"BLAH\r\n\r\n", id="garbage-request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: test.local\r\nbad header\r\n\r\n", id="bad-field"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="missing-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: test.local\r\nHost: abs.example\r\n\r\n",
                     id="duplicate-host"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: test.local\r\nContent-Length: 3\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="cl-and-te"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: test.local\r\nContent-Length: x\r\n\r\n",
                     id="bad-content-length"),
    ],
)
def test_malformed_request_is_400_and_closed(gw, up, raw) -> None:
    with RawClient(gw.port) as client:
        client.send(raw + build_request("GET", "/smuggled"))
        response = client.read_final()
        assert response.status == 400, response
        assert client.closed_by_peer()
    assert not any(q.path == "/smuggled" for q in up.requests)


def test_absolute_form_target_routes_by_its_authority(gw, up) -> None:
    response = roundtrip(gw.port, "GET", "http://abs.example/abs/path?q=1", host="test.local")
    assert response.status == 200
    received = up.last
    assert received.target == "/abs/path?q=1"
    assert received.header("host") == "abs.example"
