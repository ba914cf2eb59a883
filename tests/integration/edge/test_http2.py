"""HTTP/2 from clients (RFC 9113): h2c with prior knowledge on HTTP listeners, ALPN h2 on HTTPS
ones, streams multiplexed each as its own request to an HTTP/1.1 upstream, flow control per
stream, trailers, cancellation, local answers, drain with GOAWAY, and the attacks that are
bounded before a session exists (rapid reset, CONTINUATION, PING and SETTINGS floods, HPACK
bombs, stream-id abuse). Clients are real: curl with nghttp2, and the ``h2`` library driving
frames over a socket.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import socket
import subprocess
import time

import h2.settings
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from tests.integration.edge._helpers import forward_all, https, listener_gateway
from tests.support import resources as r
from tests.support.gateway import Gateway, metric_value
from tests.support.h2client import H2Client
from tests.support.net import free_port, poll_until
from tests.support.tls import CertFiles, Pki
from tests.support.upstream import Reply, ScriptedUpstream, pattern_body

MiB = 1024 * 1024
CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def cert(pki: Pki) -> CertFiles:
    return pki.issue("h2", "test.local")


@pytest.fixture(scope="module")
def shared_up(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("h2-up")


@pytest.fixture(scope="module")
def gw(module_gateways, shared_up: ScriptedUpstream, cert: CertFiles) -> Gateway:
    """Listener web: HTTP with h2c; a second HTTPS listener with ALPN h2; a third with
    HTTP/2 turned off."""
    tls_port, off_port = free_port(), free_port()

    def config(port: int) -> str:
        doc = listener_gateway(port, extra_listeners=[
            {"name": "tls", "port": tls_port, "address": "127.0.0.1", **https(cert)},
            {"name": "off", "port": off_port, "address": "127.0.0.1", "http2": False},
        ])
        return r.dump(doc, *forward_all("h2-up", shared_up.port))
    gateway = module_gateways(config)
    gateway.tls_port, gateway.off_port = tls_port, off_port
    return gateway


@pytest.fixture
def up(shared_up: ScriptedUpstream, gw: Gateway) -> ScriptedUpstream:
    shared_up.reset()
    return shared_up


def client(gw: Gateway, **kwargs: object) -> H2Client:
    return H2Client(gw.port, **kwargs)  # type: ignore[arg-type]


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    assert CURL is not None, "curl is needed (Debian curl, with nghttp2)"
    return subprocess.run([CURL, "-sS", "--max-time", "10", *args], capture_output=True,
                          text=True, timeout=20)


# -- negotiation ---------------------------------------------------------------------------
def test_h2c_prior_knowledge_with_curl(gw: Gateway, up: ScriptedUpstream) -> None:
    out = curl("--http2-prior-knowledge", "-H", "Host: test.local", "-w", "\n%{http_version}",
               f"http://127.0.0.1:{gw.port}/hello?x=1")
    assert out.returncode == 0, out.stderr
    body, version = out.stdout.rsplit("\n", 1)
    assert "/hello" in body  # the echo upstream describes the request it got
    assert version == "2"
    request = up.requests[-1]
    assert (request.method, request.target, request.version) == ("GET", "/hello?x=1", "HTTP/1.1")
    assert request.head.get("host") == "test.local"
    assert request.head.get("x-forwarded-for") == "127.0.0.1"
    assert request.head.get("x-forwarded-proto") == "http"


def test_alpn_h2_on_https_with_curl(gw: Gateway, up: ScriptedUpstream, pki: Pki) -> None:
    out = curl("--http2", "--cacert", str(pki.ca_file), "--resolve",
               f"test.local:{gw.tls_port}:127.0.0.1", "-w", "%{http_version}", "-o", "/dev/null",
               f"https://test.local:{gw.tls_port}/tls")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "2"
    assert up.requests[-1].head.get("x-forwarded-proto") == "https"


def test_alpn_h2_with_the_h2_library(gw: Gateway, up: ScriptedUpstream, pki: Pki) -> None:
    ctx = pki.client_context()
    with H2Client(gw.tls_port, context=ctx, server_name="test.local") as h2c:
        assert h2c.alpn == "h2"
        answer = h2c.get("/alpn")
    assert answer.status == 200
    assert up.requests[-1].target == "/alpn"


def test_http2_off_listener_speaks_http11_only(gw: Gateway, up: ScriptedUpstream) -> None:
    out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
               f"http://127.0.0.1:{gw.off_port}/")
    assert out.stdout != "200"  # the preface is not HTTP/1.1: refused
    plain = curl("-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                 f"http://127.0.0.1:{gw.off_port}/")
    assert plain.stdout == "1.1 200"


def test_http11_still_served_on_an_h2c_listener(gw: Gateway, up: ScriptedUpstream) -> None:
    out = curl("-o", "/dev/null", "-w", "%{http_version} %{http_code}",
               f"http://127.0.0.1:{gw.port}/")
    assert out.stdout == "1.1 200"


# -- streams -------------------------------------------------------------------------------
def test_many_streams_multiplexed_on_one_connection(gw: Gateway, up: ScriptedUpstream) -> None:
    with client(gw) as h2c:
        ids = [h2c.request("GET", f"/s/{i}") for i in range(40)]
        answers = [h2c.wait(i) for i in ids]
    assert all(a.status == 200 for a in answers)
    assert sorted(r.target for r in up.requests) == sorted(f"/s/{i}" for i in range(40))


def test_a_slow_stream_does_not_hold_the_others(gw: Gateway, up: ScriptedUpstream) -> None:
    up.reset(lambda req: Reply(delay=2.0) if req.target == "/slow" else Reply(body=b"fast"))
    with client(gw) as h2c:
        slow = h2c.request("GET", "/slow")
        started = time.monotonic()
        fast = h2c.wait(h2c.request("GET", "/fast"))
        fast_time = time.monotonic() - started
        assert fast.body == b"fast"
        assert fast_time < 1.5
        assert h2c.wait(slow).status == 200


def test_a_stream_over_the_limit_is_refused_alone(gw: Gateway, up: ScriptedUpstream) -> None:
    """A client that opens more streams than MAX_CONCURRENT_STREAMS (100; it may count a stream
    as ended before the gateway does) gets RST_STREAM REFUSED_STREAM on the extra one (RFC 9113
    §5.1.2, a stream error), not a GOAWAY for all of them."""
    up.reset(lambda req: Reply(delay=1.0, body=req.target.encode()))
    with client(gw) as h2c:
        assert h2c.get("/first").status == 200  # the gateway's SETTINGS are in
        limit = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
        assert h2c.h2.remote_settings[limit] == 100
        h2c.h2.remote_settings[limit] = 1000  # this client ignores the limit
        h2c.h2.remote_settings.acknowledge()
        ids = [h2c.request("GET", f"/s/{i}") for i in range(101)]
        answers = {sid: h2c.wait(sid) for sid in ids}
        refused = [sid for sid, a in answers.items() if a.reset is not None]
        assert refused == [ids[-1]]
        assert answers[ids[-1]].reset == ErrorCodes.REFUSED_STREAM
        assert all(answers[sid].status == 200 and answers[sid].body == f"/s/{n}".encode()
                   for n, sid in enumerate(ids[:-1]))
        assert h2c.goaway is None and not h2c.closed
        assert h2c.get("/after").body == b"/after"  # the connection serves on
    assert "/s/100" not in {r.target for r in up.requests}


def test_request_bodies_with_and_without_content_length(gw: Gateway,
                                                        up: ScriptedUpstream) -> None:
    body = pattern_body(300 * 1024)  # above the stream window: flow control both ways
    with client(gw) as h2c:
        unframed = h2c.wait(h2c.request("POST", "/upload", body=body))
        framed = h2c.wait(h2c.request("POST", "/upload", body=body,
                                      headers=[("content-length", str(len(body)))]))
    assert unframed.status == framed.status == 200
    first, second = up.requests[-2:]
    digest = hashlib.sha256(body).hexdigest()
    assert first.body_sha256 == second.body_sha256 == digest
    assert {first.framing, second.framing} == {"chunked", "length"}


def test_large_response_with_a_slow_reader_stalls_only_its_stream(
        gw: Gateway, up: ScriptedUpstream) -> None:
    size = 5 * MiB
    up.reset(lambda req: Reply(body_size=size) if req.target == "/big" else Reply(body=b"ok"))
    with client(gw, auto_ack=False) as h2c:
        # a connection window far larger than the stream's: only the stream window can fill
        h2c.h2.increment_flow_control_window(16 * MiB)
        big = h2c.request("GET", "/big")
        # the big stream's window fills and is never opened: the other stream must still run
        other = h2c.request("GET", "/other")
        deadline = time.monotonic() + 5
        while not h2c.answers[other].ended and time.monotonic() < deadline:
            h2c.read_once()
        assert h2c.answers[other].body == b"ok"
        assert len(h2c.answers[big].body) < size
        h2c.auto_ack = True  # now read the rest: everything arrives intact
        h2c.h2.increment_flow_control_window(size, big)
        h2c.flush()
        answer = h2c.wait(big)
    assert answer.body == pattern_body(size)


def test_response_trailers_reach_the_client(gw: Gateway, up: ScriptedUpstream) -> None:
    up.reset(lambda req: Reply(body=b"data", framing="chunked",
                               trailers=[("grpc-status", "0"), ("x-checksum", "abc")]))
    with client(gw) as h2c:
        answer = h2c.get("/trailers", headers=[("te", "trailers")])
    assert answer.body == b"data"
    assert (b"grpc-status", b"0") in answer.trailers
    assert (b"x-checksum", b"abc") in answer.trailers
    assert up.requests[-1].head.get("te") == "trailers"


def test_request_trailers_go_upstream(gw: Gateway, up: ScriptedUpstream) -> None:
    with client(gw) as h2c:
        sid = h2c.request("POST", "/rt", end=False)
        h2c.send_data(sid, b"payload")
        h2c.h2.send_headers(sid, [(b"x-sum", b"42")], end_stream=True)
        h2c.flush()
        assert h2c.wait(sid).status == 200
    assert up.requests[-1].body == b"payload"
    assert ("x-sum", "42") in up.requests[-1].trailers


def test_client_reset_cancels_the_upstream_exchange(gw: Gateway, up: ScriptedUpstream) -> None:
    up.reset(lambda req: Reply(delay=1.0) if req.target == "/cancel" else Reply())
    with client(gw) as h2c:
        sid = h2c.request("GET", "/cancel")
        deadline = time.monotonic() + 5
        while not any(r.target == "/cancel" for r in up.requests):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        cancelled_conn = next(r.conn_id for r in up.requests if r.target == "/cancel")
        h2c.reset(sid)
        time.sleep(0.3)
        after = h2c.get("/after")
    assert after.status == 200
    # the cancelled exchange's upstream connection was dropped, never reused
    assert up.requests[-1].conn_id != cancelled_conn


def test_local_answers_head_and_no_route(gw: Gateway, up: ScriptedUpstream) -> None:
    up.reset(lambda req: Reply(status=204) if req.target == "/empty" else Reply(body=b"x" * 10))
    with client(gw) as h2c:
        head = h2c.wait(h2c.request("HEAD", "/h"))
        empty = h2c.get("/empty")
        missing = h2c.get("/", authority="nobody.example")
    assert head.status == 200 and head.body == b"" and head.header(b"content-length") == b"10"
    assert empty.status == 204 and empty.body == b""
    assert missing.status == 200  # the catch-all route serves any host in this gateway


def test_malformed_requests_get_stream_errors_not_crashes(gw: Gateway,
                                                          up: ScriptedUpstream) -> None:
    with client(gw) as h2c:
        bad = h2c.get("/a_b", headers=[("x_under", "1")])  # underscores refused as on HTTP/1.1
        assert bad.status == 400
        good = h2c.get("/fine")
        assert good.status == 200
        dotted = h2c.get("/a/../admin")
        assert dotted.status == 200
    assert up.requests[-1].target == "/admin"  # normalised like HTTP/1.1


BASE = [(":method", "GET"), (":scheme", "http"), (":authority", "test.local")]


@pytest.mark.parametrize("fields", [
    pytest.param([*BASE, (":path", "/m"), ("connection", "close")], id="connection"),
    pytest.param([*BASE, (":path", "/m"), ("te", "gzip")], id="te-gzip"),
    pytest.param([*BASE, (":path", "/m"), ("X-Upper", "1")], id="upper-case-name"),
    pytest.param([*BASE[:2], ("x-regular", "1"), BASE[2], (":path", "/m")],
                 id="pseudo-after-regular"),
    pytest.param([*BASE, (":path", "/m"), (":foo", "1")], id="unknown-pseudo"),
    pytest.param([*BASE, (":path", "/m"), (":path", "/n")], id="duplicate-pseudo"),
    pytest.param([*BASE, (":path", "")], id="empty-path"),
    pytest.param([*BASE, (":path", "/m"), ("x-v", "a\rb")], id="cr-in-value"),
    pytest.param([*BASE, (":path", "/m"), ("x-v", "a\x00b")], id="nul-in-value"),
    pytest.param([*BASE, (":path", "/m"), ("x a", "1")], id="space-in-name"),
    pytest.param([*BASE, (":path", "/m"), ("x:a", "1")], id="colon-in-name"),
    pytest.param([*BASE, (":path", "/m"), ("content-length", "x")], id="content-length"),
])
def test_a_malformed_request_is_a_stream_error_the_others_are_served(
        gw: Gateway, up: ScriptedUpstream, fields: list[tuple[str, str]]) -> None:
    """RFC 9113 §8.1.1: a malformed request is a stream error; it gets its 400 (with an
    x-request-id, logged) and the connection serves on: a stream in flight before it and the
    streams after it are answered. Its header block still went through the connection's
    HPACK decoder: the later blocks refer to the dynamic-table entries it added (x-trace),
    and would decode to the wrong fields (or fail) had it been skipped."""
    up.reset(lambda req: Reply(delay=0.3, body=b"slow") if req.target == "/slow"
             else Reply(body=(req.head.get("x-trace") or "").encode()))
    with client(gw, raw_headers=True) as h2c:
        slow = h2c.request("GET", "/slow")
        sid = h2c.h2.get_next_available_stream_id()
        h2c.answers[sid] = type(h2c.answers[slow])()
        h2c.h2.send_headers(sid, [(n.encode(), v.encode()) for n, v in fields]
                            + [(b"x-trace", b"t-1")], end_stream=True)
        h2c.flush()
        after = [h2c.request("GET", f"/after/{i}", headers=[("x-trace", "t-1")])
                 for i in range(3)]
        bad = h2c.wait(sid)
        answers = [h2c.wait(i) for i in after]
        assert h2c.wait(slow).body == b"slow"
        assert h2c.goaways == [] and not h2c.closed
        assert h2c.get("/last").status == 200
    assert bad.status == 400, bad
    request_id = bad.header(b"x-request-id")
    assert request_id
    assert all(a.status == 200 and a.body == b"t-1" for a in answers)
    targets = {r.target for r in up.requests}
    assert {"/after/0", "/after/1", "/after/2", "/slow", "/last"} <= targets
    assert "/m" not in targets and "/n" not in targets
    line = poll_until(lambda: next((x for x in gw.access_log()
                                    if x["request_id"] == request_id.decode()), None))
    assert line["status"] == 400 and line["route"] is None and line["protocol"] == "HTTP/2"


def test_malformed_trailers_reset_their_stream_alone(gw: Gateway, up: ScriptedUpstream) -> None:
    with client(gw, raw_headers=True) as h2c:
        sid = h2c.request("POST", "/rt", end=False)
        h2c.send_data(sid, b"payload")
        h2c.h2.send_headers(sid, [(b":path", b"/in-trailers")], end_stream=True)
        h2c.flush()
        answer = h2c.wait(sid)
        assert answer.reset == ErrorCodes.PROTOCOL_ERROR
        assert h2c.get("/next").status == 200
        assert h2c.goaways == []


@pytest.mark.parametrize(("length", "body"), [
    pytest.param("5", b"0123456789", id="more-data-than-declared"),
    pytest.param("10", b"01234", id="less-data-than-declared"),
])
def test_a_content_length_disagreeing_with_the_data_resets_its_stream_alone(
        gw: Gateway, up: ScriptedUpstream, length: str, body: bytes) -> None:
    """RFC 9113 §8.1.1: a request whose DATA disagrees with its Content-Length is malformed,
    a stream error; h2 made it a connection error, ending every stream with it."""
    with client(gw) as h2c:
        sid = h2c.request("POST", "/cl", headers=[("content-length", length)], body=body)
        answer = h2c.wait(sid)
        assert answer.reset == ErrorCodes.PROTOCOL_ERROR, answer
        for _ in range(3):  # the connection's window was given back: it serves on
            assert h2c.get("/next").status == 200
        assert h2c.goaways == []


def test_a_connection_error_sends_one_goaway(gw: Gateway) -> None:
    """h2 queues its GOAWAY when it raises a connection error: the gateway adds none."""
    with client(gw) as h2c:
        frame = HeadersFrame(2, flags=["END_HEADERS", "END_STREAM"])  # an even id
        frame.data = _headers_block(h2c, 2)
        h2c.send_raw(frame.serialize())
        h2c.wait_goaway()
        with pytest.raises(ConnectionError):
            for _ in range(50):
                h2c.read_once()
    assert [g.error_code for g in h2c.goaways] == [ErrorCodes.PROTOCOL_ERROR]


@pytest.mark.parametrize("method", ["DELETE", "OPTIONS", "TRACE"])
def test_a_body_without_content_length_is_forwarded_as_on_http11(
        gw: Gateway, up: ScriptedUpstream, method: str) -> None:
    """HTTP/1.1 forwards a body on any method but GET and HEAD (RFC 9110 §9.3.5 allows content
    in a DELETE): so does HTTP/2, also without Content-Length (RFC 9113 §8.1.1 makes only a
    Content-Length that disagrees with the DATA malformed)."""
    body = b'{"ids":[1,2]}'
    with client(gw) as h2c:
        answer = h2c.wait(h2c.request(method, "/body", body=body))
    assert answer.status == 200, answer
    assert (up.requests[-1].method, up.requests[-1].body) == (method, body)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_body_on_get_or_head_is_answered_400_on_its_stream(
        gw: Gateway, up: ScriptedUpstream, method: str) -> None:
    """HTTP/1.1 answers a GET or HEAD with a body 400: HTTP/2 too, on the stream (not a bare
    RST_STREAM), when the body comes as DATA without Content-Length."""
    up.reset(lambda req: Reply(delay=0.5))
    with client(gw) as h2c:
        answer = h2c.wait(h2c.request(method, "/get-body", body=b"x"))
        assert answer.status == 400 and answer.reset is None, answer
        assert answer.header(b"x-request-id")
        assert h2c.get("/after").status == 200


def test_a_refused_stream_has_an_id_a_log_line_and_a_count(gw: Gateway,
                                                           up: ScriptedUpstream) -> None:
    """As HTTP/1.1's: a stream refused before routing is answered with an x-request-id,
    logged and counted on its Gateway's unrouted series (route="none")."""
    before = metric_value(gw.metrics(), "propylon_requests_by_status_total", route="none",
                          status="400")
    with client(gw) as h2c:
        answer = h2c.get("/refused", headers=[("x_under", "1")])
    assert answer.status == 400
    request_id = answer.header(b"x-request-id")
    assert request_id and len(request_id) >= 16
    line = poll_until(lambda: next((x for x in gw.access_log()
                                    if x["request_id"] == request_id.decode()), None),
                      message="the refused stream's access log line")
    assert (line["status"], line["route"], line["method"], line["path"]) == (
        400, None, "GET", "/refused")
    assert metric_value(gw.metrics(), "propylon_requests_by_status_total", route="none",
                        status="400") == before + 1


def test_a_client_goaway_lets_its_streams_in_flight_finish(gw: Gateway,
                                                           up: ScriptedUpstream) -> None:
    """RFC 9113 §6.8: a GOAWAY stops its receiver from opening streams; the streams the
    client opened are answered, then the gateway closes the connection."""
    up.reset(lambda req: Reply(delay=0.3, body=b"answered"))
    with client(gw) as h2c:
        sid = h2c.request("GET", "/inflight")
        h2c.send_raw(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
        answer = h2c.wait(sid)
        assert (answer.status, answer.body) == (200, b"answered")
        goaway = h2c.wait_goaway()
    assert goaway.error_code == ErrorCodes.NO_ERROR and goaway.last_stream_id == sid


# -- attacks --------------------------------------------------------------------------------
def _headers_block(h2c: H2Client, stream_id: int) -> bytes:
    return h2c.h2.encoder.encode([(b":method", b"GET"), (b":scheme", b"http"),
                                  (b":authority", b"test.local"), (b":path", b"/")])


def test_rapid_reset_is_stopped_with_enhance_your_calm(gw: Gateway, up: ScriptedUpstream) -> None:
    with client(gw) as h2c:
        frames = b""
        for i in range(400):
            sid = 1 + 2 * i
            headers = HeadersFrame(sid, flags=["END_HEADERS", "END_STREAM"])
            headers.data = _headers_block(h2c, sid)
            frames += headers.serialize() + RstStreamFrame(sid, error_code=8).serialize()
        h2c.send_raw(frames)
        goaway = h2c.wait_goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert len(up.requests) < 400
    assert curl("-o", "/dev/null", "-w", "%{http_code}",
                f"http://127.0.0.1:{gw.port}/").stdout == "200"


def test_continuation_flood_is_stopped(gw: Gateway) -> None:
    with client(gw) as h2c:
        headers = HeadersFrame(1)  # no END_HEADERS: CONTINUATION frames follow
        headers.data = _headers_block(h2c, 1)
        flood = headers.serialize()
        for _ in range(200):
            cont = ContinuationFrame(1)
            cont.data = b"\x40\x01a\x01b"  # literal field a: b, again and again
            flood += cont.serialize()
        h2c.send_raw(flood)
        goaway = h2c.wait_goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM


@pytest.mark.parametrize("frame", [
    pytest.param(lambda: PingFrame(0, opaque_data=b"12345678"), id="ping"),
    pytest.param(lambda: SettingsFrame(0, settings={SettingsFrame.ENABLE_PUSH: 0}), id="settings"),
])
def test_control_frame_floods_are_stopped(gw: Gateway, frame) -> None:
    with client(gw) as h2c:
        h2c.send_raw(frame().serialize() * 300)
        goaway = h2c.wait_goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_a_busy_client_with_many_control_frames_is_not_a_flood(gw: Gateway,
                                                               up: ScriptedUpstream) -> None:
    """gRPC clients send WINDOW_UPDATEs and BDP PINGs along with their calls: control frames
    are budgeted against the useful frames, so 300 calls each followed by a PING and eight
    WINDOW_UPDATEs (2,700 control frames in a few seconds) are served, not cut."""
    answers = []
    with client(gw) as h2c:
        for batch in range(6):  # 50 streams at a time: under MAX_CONCURRENT_STREAMS (100)
            ids = []
            for i in range(50):
                ids.append(h2c.request("GET", f"/busy/{batch}/{i}"))
                h2c.h2.ping(b"%04d%04d" % (batch, i))
                for _ in range(8):
                    h2c.h2.increment_flow_control_window(1)
                h2c.flush()
            answers += [h2c.wait(sid) for sid in ids]
        assert h2c.goaway is None
    assert len(answers) == 300 and all(a.status == 200 for a in answers)


def test_hpack_bomb_is_refused(gw: Gateway, up: ScriptedUpstream) -> None:
    """One large header in the dynamic table, then referenced many times: the decoded list
    passes the listener's limit long before memory does."""
    with client(gw) as h2c:
        before = len(up.requests)
        sid = h2c.h2.get_next_available_stream_id()
        fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"test.local"),
                  (b":path", b"/bomb"), (b"x-big", b"a" * 4000)]
        block = h2c.h2.encoder.encode(fields)
        block += b"\xbe" * 1000  # the indexed dynamic entry (x-big), repeated: ~4 MB decoded
        frame = HeadersFrame(sid, flags=["END_HEADERS", "END_STREAM"])
        frame.data = block
        h2c.send_raw(frame.serialize())
        goaway = h2c.wait_goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM  # h2's DenialOfServiceError
    assert len(up.requests) == before


@pytest.mark.parametrize("stream_id", [
    pytest.param(2, id="even-id-from-a-client"),
    pytest.param(0, id="headers-on-stream-0"),
])
def test_stream_id_abuse_is_a_protocol_error(gw: Gateway, stream_id: int) -> None:
    with client(gw) as h2c:
        frame = HeadersFrame(stream_id, flags=["END_HEADERS", "END_STREAM"]) if stream_id \
            else None
        if frame is None:
            raw = (b"\x00\x00\x01\x01\x05\x00\x00\x00\x00" + b"\x82")  # HEADERS on stream 0
        else:
            frame.data = _headers_block(h2c, stream_id)
            raw = frame.serialize()
        h2c.send_raw(raw)
        goaway = h2c.wait_goaway()
    assert goaway.error_code == ErrorCodes.PROTOCOL_ERROR


def test_decreasing_stream_ids_are_a_protocol_error(gw: Gateway, up: ScriptedUpstream) -> None:
    with client(gw) as h2c:
        first = HeadersFrame(5, flags=["END_HEADERS", "END_STREAM"])
        first.data = _headers_block(h2c, 5)
        second = HeadersFrame(3, flags=["END_HEADERS", "END_STREAM"])
        second.data = _headers_block(h2c, 3)
        h2c.send_raw(first.serialize() + second.serialize())
        goaway = h2c.wait_goaway()
    assert goaway.error_code == ErrorCodes.PROTOCOL_ERROR


def test_garbage_after_the_preface_closes_only_that_connection(gw: Gateway,
                                                               up: ScriptedUpstream) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64)
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data  # SETTINGS then GOAWAY, then the close
    with client(gw) as h2c:
        assert h2c.get("/still").status == 200


# -- drain ---------------------------------------------------------------------------------
def test_drain_sends_goaway_and_finishes_streams_in_flight(pki: Pki, tmp_path) -> None:
    """A stream in flight when the gateway is told to stop gets its whole answer (curl:
    the h2 library's own client refuses frames after a GOAWAY); an idle connection gets
    GOAWAY(NO_ERROR) and is closed."""
    upstream = ScriptedUpstream("drain-up").start()
    try:
        upstream.reset(lambda req: Reply(delay=1.0, body=b"finished"))
        gw = Gateway(tmp_path, lambda port: r.dump(r.gateway(port),
                                                    *forward_all("drain-up", upstream.port)))
        gw.start()
        try:
            idle = client(gw)
            assert idle.get("/warm").status == 200
            assert CURL is not None
            inflight = subprocess.Popen(
                [CURL, "-sS", "--max-time", "10", "--http2-prior-knowledge",
                 f"http://127.0.0.1:{gw.port}/inflight"], stdout=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 5
            while not any(req.target == "/inflight" for req in upstream.requests):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert gw.process is not None
            gw.process.send_signal(signal.SIGTERM)
            out, _ = inflight.communicate(timeout=15)
            assert out == "finished"
            goaway = idle.wait_goaway()
            assert goaway.error_code == ErrorCodes.NO_ERROR
            idle.close()
        finally:
            gw.stop()
    finally:
        upstream.stop()


# the GOAWAY of a graceful shutdown's first phase: last stream id 2^31-1, NO_ERROR
FIRST_GOAWAY = GoAwayFrame(0, last_stream_id=2**31 - 1, error_code=0).serialize()


def test_drain_is_two_phase_and_serves_a_request_crossing_the_goaway(pki: Pki,
                                                                       tmp_path) -> None:
    """RFC 9113 §6.8: a graceful shutdown first sends GOAWAY(2^31-1) and a PING; a request the
    client sent before it saw that GOAWAY (on the wire meanwhile) is served; the final GOAWAY
    names it, after the PING's ACK; the connection closes once it is answered."""
    upstream = ScriptedUpstream("drain2-up").start()
    try:
        upstream.reset(lambda req: Reply(delay=0.3, body=req.target.encode()))
        gw = Gateway(tmp_path, lambda port: r.dump(r.gateway(port),
                                                    *forward_all("drain2-up", upstream.port)))
        gw.start()
        try:
            h2c = client(gw)
            assert h2c.get("/warm").status == 200
            assert gw.process is not None
            gw.process.send_signal(signal.SIGTERM)
            held = b""  # what the gateway sent, read but not yet seen by the client
            deadline = time.monotonic() + 5
            while FIRST_GOAWAY not in held:
                assert time.monotonic() < deadline, f"no GOAWAY(2^31-1): {held!r}"
                held += h2c.sock.recv(65536)
            crossed = h2c.request("GET", "/crossed")  # sent before the GOAWAY was read
            for event in h2c.h2.receive_data(held):
                h2c._event(event)
            h2c.flush()  # the PING's ACK
            answer = h2c.wait(crossed)
            assert (answer.status, answer.body) == (200, b"/crossed")
            while len(h2c.goaways) < 2:
                h2c.read_once()
            first, final = h2c.goaways[:2]
            assert (first.last_stream_id, first.error_code) == (2**31 - 1, ErrorCodes.NO_ERROR)
            assert (final.last_stream_id, final.error_code) == (crossed, ErrorCodes.NO_ERROR)
            with pytest.raises(ConnectionError):  # closed once the stream was answered
                for _ in range(50):
                    h2c.read_once()
            h2c.close()
        finally:
            gw.stop()
    finally:
        upstream.stop()
