"""gRPC through the gateway, end to end: a real grpcio client speaks HTTP/2 to the gateway
(h2c), the gateway forwards over HTTP/2 to a real grpcio server; the four call kinds,
trailers (grpc-status, grpc-message, custom metadata), ``matches[].grpc`` routing,
``grpc-timeout`` as a deadline, gateway-made errors as Trailers-Only answers with the mapped
grpc-status (no route, upstream down, timeout, a policy's 401/429), retries on gRPC status
codes, and gRPC codes in the access log and metrics.

The stubs are generated from ``echo.proto`` by grpcio-tools into a temporary directory.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from grpc_tools import protoc
from hyperframe.frame import GoAwayFrame

from tests.support import resources as r
from tests.support.gateway import Gateway, metric_value
from tests.support.h2client import H2Client
from tests.support.net import free_port, poll_until

PROTO = Path(__file__).with_name("echo.proto")


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    out = tmp_path_factory.mktemp("grpc_stubs")
    code = protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(PROTO)])
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("echo_pb2"), importlib.import_module("echo_pb2_grpc")
    finally:
        sys.path.remove(str(out))


class EchoServer:
    """A grpcio server on 127.0.0.1 (h2c). ``fail_next`` answers that many calls with
    UNAVAILABLE first; ``delay`` slows Unary; ``stream_delay`` comes before each message of
    ServerStream, which sets ``stream_cancelled`` when it finds its call cancelled."""

    def __init__(self, stubs: tuple[ModuleType, ModuleType]) -> None:
        pb2, pb2_grpc = stubs
        self.pb2 = pb2
        self.calls = 0
        self.fail_next = 0
        self.delay = 0.0
        self.stream_delay = 0.0
        self.stream_cancelled = threading.Event()
        self.metadata: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        server = self

        class Servicer(pb2_grpc.EchoServicer):  # type: ignore[name-defined,misc]
            def Unary(self, request: Any, context: grpc.ServicerContext) -> Any:
                with server.lock:
                    server.calls += 1
                    server.metadata = list(context.invocation_metadata())
                    failing = server.fail_next > 0
                    if failing:
                        server.fail_next -= 1
                if failing:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
                if request.text == "error":
                    context.set_trailing_metadata((("x-detail", "bad input"),))
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no errors, please")
                if server.delay:
                    time.sleep(server.delay)
                context.set_trailing_metadata((("x-served-by", "echo"),))
                return pb2.Note(text=request.text.upper(), count=request.count + 1)

            def ServerStream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                for i in range(request.count):
                    if server.stream_delay:
                        time.sleep(server.stream_delay)
                        if not context.is_active():
                            server.stream_cancelled.set()
                            return
                    yield pb2.Note(text=f"{request.text}-{i}", count=i)

            def ClientStream(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                notes = list(requests)
                return pb2.Note(text="".join(n.text for n in notes), count=len(notes))

            def Bidi(self, requests: Iterator[Any], context: grpc.ServicerContext
                     ) -> Iterator[Any]:
                for note in requests:
                    yield pb2.Note(text=note.text[::-1], count=note.count)

        self.executor = futures.ThreadPoolExecutor(max_workers=8)
        self.server = grpc.server(self.executor)
        pb2_grpc.add_EchoServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        """The server, then its threads: none is left behind for the next test in this
        process (``ForkedCall`` forks only when it runs the process's one thread)."""
        self.server.stop(grace=None).wait(10)
        self.executor.shutdown(wait=True)


@pytest.fixture(scope="module")
def echo(stubs) -> Iterator[EchoServer]:
    server = EchoServer(stubs)
    yield server
    server.stop()


def grpc_config(port: int, echo_port: int, down_port: int) -> str:
    service = "propylon.test.Echo"
    return r.dump(
        r.gateway(port),
        r.route("grpc", rules=[
            {"name": "retried", "matches": [{"grpc": {"service": service,
                                                      "method": "ClientStream"}}],
             "forward": {**r.forward("echo"), "retries": {
                 "attempts": 3, "on": ["unavailable"]}}},
            {"name": "unary-retried", "matches": [
                {"grpc": {"service": service, "method": "Unary"},
                 "headers": [{"name": "x-retry", "value": "yes"}]}],
             "forward": {**r.forward("echo"), "retries": {
                 "attempts": 3, "on": ["unavailable"]}}},
            {"name": "limited", "matches": [
                {"grpc": {"service": service, "method": "Unary"},
                 "headers": [{"name": "x-limited", "value": "yes"}]}],
             "policies": [{"rateLimit": {"limits": [{"requests": 1, "per": "1m"}]}}],
             "forward": r.forward("echo")},
            {"name": "short", "matches": [
                {"grpc": {"service": service, "method": "ServerStream"},
                 "headers": [{"name": "x-short", "value": "yes"}]}],
             "forward": {**r.forward("echo"), "timeout": "500ms"}},
            {"name": "echo", "matches": [{"grpc": {"service": service}}],
             "forward": {**r.forward("echo"), "timeout": "3s"}},
            {"name": "down", "matches": [{"grpc": {"service": "propylon.test.Down"}}],
             "forward": r.forward("down")},
        ]),
        r.upstream("echo", echo_port, protocol="HTTP2"),
        r.upstream("down", down_port, protocol="HTTP2"),
    )


@pytest.fixture(scope="module")
def gw(module_gateways, echo: EchoServer) -> Gateway:
    down_port = free_port()
    return module_gateways(lambda port: grpc_config(port, echo.port, down_port))


@pytest.fixture
def channel(gw: Gateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as chan:
        yield chan


@pytest.fixture
def stub(stubs, channel) -> Any:
    return stubs[1].EchoStub(channel)


def note(stubs: tuple[ModuleType, ModuleType], text: str, count: int = 0) -> Any:
    return stubs[0].Note(text=text, count=count)


def test_unary_call_with_trailers(stubs, stub, echo: EchoServer) -> None:
    reply, call = stub.Unary.with_call(note(stubs, "hello", 41), metadata=[("x-team", "a")])
    assert (reply.text, reply.count) == ("HELLO", 42)
    assert ("x-served-by", "echo") in call.trailing_metadata()
    assert call.code() == grpc.StatusCode.OK
    assert ("x-team", "a") in echo.metadata
    assert any(k == "x-forwarded-for" for k, _ in echo.metadata)


def test_error_status_and_message_pass_through(stubs, stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Unary(note(stubs, "error"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "no errors, please"
    assert ("x-detail", "bad input") in err.value.trailing_metadata()


def test_server_streaming(stubs, stub) -> None:
    notes = list(stub.ServerStream(note(stubs, "n", 50)))
    assert [n.text for n in notes] == [f"n-{i}" for i in range(50)]


def test_client_streaming(stubs, stub) -> None:
    reply = stub.ClientStream(iter([note(stubs, c) for c in "gateway"]))
    assert (reply.text, reply.count) == ("gateway", 7)


def test_bidirectional_streaming_interleaves(stubs, stub) -> None:
    """Each reply comes back before the next request is sent: the gateway streams both ways
    without buffering a whole message list."""
    outbox: list[Any] = []
    ready = threading.Event()

    def requests() -> Iterator[Any]:
        for i in range(5):
            ready.clear()
            yield note(stubs, f"abc{i}", i)
            assert ready.wait(5), "the reply did not come back before the next request"

    for reply in stub.Bidi(requests()):
        outbox.append(reply)
        ready.set()
    assert [r.text for r in outbox] == [f"{i}cba" for i in range(5)]


def test_many_concurrent_calls_on_one_channel(stubs, stub) -> None:
    futures_ = [stub.Unary.future(note(stubs, f"c{i}", i)) for i in range(50)]
    assert [f.result(timeout=10).count for f in futures_] == [i + 1 for i in range(50)]


def test_unknown_method_is_unimplemented_from_the_gateway(stubs, channel) -> None:
    call = channel.unary_unary("/propylon.test.Nope/Missing",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=stubs[0].Note.FromString)
    with pytest.raises(grpc.RpcError) as err:
        call(note(stubs, "x"))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the gateway's 404


def test_upstream_down_is_unavailable(stubs, channel) -> None:
    call = channel.unary_unary("/propylon.test.Down/Unary",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=stubs[0].Note.FromString)
    with pytest.raises(grpc.RpcError) as err:
        call(note(stubs, "x"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the gateway's 502/503


def test_grpc_timeout_is_a_deadline_kept_by_the_gateway(stubs, stub, echo) -> None:
    echo.delay = 1.0
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.Unary(note(stubs, "slow"), timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 0.9
    finally:
        echo.delay = 0.0


def test_gateway_answers_deadline_exceeded_itself(gw: Gateway, echo: EchoServer) -> None:
    """A raw HTTP/2 call with grpc-timeout and a client that would wait forever: the gateway
    ends it at the deadline with a Trailers-Only DEADLINE_EXCEEDED."""
    from tests.support.h2client import H2Client
    echo.delay = 1.0
    try:
        with H2Client(gw.port) as h2c:
            started = time.monotonic()
            sid = h2c.request("POST", "/propylon.test.Echo/Unary", headers=[
                ("content-type", "application/grpc"), ("te", "trailers"),
                ("grpc-timeout", "200m")], body=b"\x00\x00\x00\x00\x07\n\x05sleep")
            answer = h2c.wait(sid)
            elapsed = time.monotonic() - started
    finally:
        echo.delay = 0.0
    assert answer.status == 200
    fields = dict(answer.headers + answer.trailers)
    assert fields[b"grpc-status"] == b"4"
    assert fields[b"content-type"] == b"application/grpc"
    assert 0.15 < elapsed < 0.9


GRPC_HEAD = [("content-type", "application/grpc"), ("te", "trailers")]
SLEEP_NOTE = b"\x00\x00\x00\x00\x07\n\x05sleep"  # a Note(text="sleep") message


@pytest.fixture
def slow_stream(echo: EchoServer) -> Iterator[EchoServer]:
    """ServerStream sends a message every 200 ms."""
    echo.stream_delay = 0.2
    echo.stream_cancelled.clear()
    yield echo
    echo.stream_delay = 0.0


def test_route_timeout_in_a_server_stream_is_deadline_exceeded(
        stubs, stub, slow_stream: EchoServer) -> None:
    """The route's timeout (500 ms) passes after messages went to the client, whose own
    deadline is far: the call ends with DEADLINE_EXCEEDED (it was reset with INTERNAL_ERROR:
    grpcio reported INTERNAL) after the messages sent so far, and the upstream call is
    cancelled."""
    texts: list[str] = []
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        for reply in stub.ServerStream(note(stubs, "s", 50), metadata=[("x-short", "yes")],
                                       timeout=10):
            texts.append(reply.text)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.value.details() == "upstream timed out"
    assert texts == [f"s-{i}" for i in range(len(texts))] and 0 < len(texts) < 50
    assert time.monotonic() - started < 3
    assert slow_stream.stream_cancelled.wait(5), "the upstream call was not cancelled"


def test_grpc_timeout_in_a_server_stream_ends_with_deadline_exceeded_trailers(
        stubs, gw: Gateway, slow_stream: EchoServer) -> None:
    """The client's grpc-timeout (700 ms), kept by the gateway, passes after messages went
    out: the messages, then trailers with DEADLINE_EXCEEDED (a raw client, which keeps no
    deadline of its own: grpcio's would fire at the same moment)."""
    message = note(stubs, "s", 50).SerializeToString()
    with H2Client(gw.port) as h2c:
        answer = h2c.wait(h2c.request(
            "POST", "/propylon.test.Echo/ServerStream",
            headers=[*GRPC_HEAD, ("grpc-timeout", "700m")],
            body=b"\x00" + len(message).to_bytes(4, "big") + message))
    assert (answer.status, answer.reset, answer.ended) == (200, None, True)
    assert b"s-0" in answer.body
    assert (b"grpc-status", b"4") in answer.trailers
    assert slow_stream.stream_cancelled.wait(5), "the upstream call was not cancelled"


def test_a_client_goaway_lets_a_call_in_flight_finish(gw: Gateway, echo: EchoServer) -> None:
    """RFC 9113 §6.8: a client's GOAWAY stops the gateway from opening streams, not from
    answering the calls the client made: the unary call completes, trailers included."""
    echo.delay = 0.3
    try:
        with H2Client(gw.port) as h2c:
            sid = h2c.request("POST", "/propylon.test.Echo/Unary", headers=GRPC_HEAD,
                              body=SLEEP_NOTE)
            h2c.send_raw(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
            answer = h2c.wait(sid)
    finally:
        echo.delay = 0.0
    assert answer.status == 200 and answer.reset is None
    assert (b"grpc-status", b"0") in answer.trailers
    assert b"SLEEP" in answer.body


def test_a_call_refused_before_routing_is_trailers_only(stubs, stub, gw: Gateway) -> None:
    """DESIGN §6: gRPC errors the gateway makes are Trailers-Only answers with the mapped
    grpc-status; the reason is the grpc-message (a plain 400 reached grpcio as INTERNAL
    "Received http2 header with status: 400"). The refusal has an x-request-id, an access
    log line with its gRPC status and a count on the unrouted series."""
    before = metric_value(gw.metrics(), "propylon_requests_by_status_total", route="none",
                          status="400")
    with pytest.raises(grpc.RpcError) as err:
        stub.Unary(note(stubs, "x"), metadata=[("x_under", "1")])
    assert err.value.code() == grpc.StatusCode.INTERNAL  # 400, by gRPC's table
    assert err.value.details() == "header names with underscores are not accepted"
    request_id = dict(err.value.trailing_metadata()).get("x-request-id")
    assert request_id
    line = poll_until(lambda: next((x for x in gw.access_log()
                                    if x["request_id"] == request_id), None))
    assert (line["status"], line["grpc_status"], line["route"]) == (400, 13, None)
    assert line["path"] == "/propylon.test.Echo/Unary"
    assert metric_value(gw.metrics(), "propylon_requests_by_status_total", route="none",
                        status="400") == before + 1


@pytest.mark.parametrize(("extra", "code", "message"), [
    pytest.param([(f"x-h{i}", "1") for i in range(101)], b"2",
                 b"request header fields too large", id="431-too-many-fields"),
    pytest.param([("X-Upper", "1")], b"13", b"malformed request: ", id="malformed-head"),
])
def test_raw_calls_refused_before_routing_are_trailers_only(
        gw: Gateway, extra: list[tuple[str, str]], code: bytes, message: bytes) -> None:
    with H2Client(gw.port, raw_headers=True) as h2c:
        answer = h2c.wait(h2c.request("POST", "/propylon.test.Echo/Unary",
                                      headers=GRPC_HEAD + extra, body=SLEEP_NOTE))
        assert h2c.get("/after").status == 404  # the connection serves on (no route: 404)
    assert answer.status == 200 and answer.ended and answer.body == b""
    fields = dict(answer.headers)
    assert fields[b"content-type"] == b"application/grpc"
    assert fields[b"grpc-status"] == code
    assert fields[b"grpc-message"].startswith(message)
    assert fields[b"x-request-id"]


def test_policy_refusals_are_mapped(stubs, stub) -> None:
    stub.Unary(note(stubs, "first"), metadata=[("x-limited", "yes")])
    with pytest.raises(grpc.RpcError) as err:
        stub.Unary(note(stubs, "second"), metadata=[("x-limited", "yes")])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # 429 -> UNAVAILABLE (gRPC's table)


def test_retries_on_grpc_status(stubs, stub, echo: EchoServer) -> None:
    with echo.lock:
        echo.fail_next = 2
        before = echo.calls
    reply = stub.Unary(note(stubs, "again"), metadata=[("x-retry", "yes")])
    assert reply.text == "AGAIN"
    assert echo.calls - before == 3  # two UNAVAILABLE answers retried by the gateway


def test_access_log_and_metrics_show_grpc_codes(stubs, stub, gw: Gateway) -> None:
    stub.Unary(note(stubs, "logged"))
    with pytest.raises(grpc.RpcError):
        stub.Unary(note(stubs, "error"))
    assert gw.access_log_path is not None
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in gw.access_log_path.read_text().splitlines()]
        if any(line.get("grpc_status") == 3 for line in lines):
            break
        time.sleep(0.1)
    assert any(line.get("grpc_status") == 0 and line["protocol"] == "HTTP/2" for line in lines)
    assert any(line.get("grpc_status") == 3 for line in lines)
    text = urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/metrics",
                                  timeout=5).read().decode()
    assert 'propylon_grpc_responses_total{' in text
    assert 'grpc_code="3"' in text and 'grpc_code="0"' in text


def test_explain_shows_the_grpc_rule_and_both_protocols(gw: Gateway) -> None:
    import subprocess
    out = subprocess.run(
        [sys.executable, "-m", "propylon", "explain", "POST",
         "http://test.local/propylon.test.Echo/Unary", "-H", "content-type: application/grpc",
         "-c", str(gw.config_dir)], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[3])
    assert out.returncode == 0, out.stderr
    assert "rule 3" in out.stdout or "echo" in out.stdout
    assert "HTTP/2 when the client opens with the h2c preface" in out.stdout
    assert "spoken to in HTTP/2 (h2c, prior knowledge)" in out.stdout
