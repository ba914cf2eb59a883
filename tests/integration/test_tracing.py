"""Tracing through real gateways: W3C Trace Context as the upstream receives it, and the spans
an OTLP/HTTP receiver (decoding with ``opentelemetry-proto``) gets from the gateway.

Gateways run with ``OTEL_BSP_SCHEDULE_DELAY=50`` (the environment the proxy reads), so spans
arrive within a fraction of a second instead of the SDK's default 5 s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway, metric_value
from tests.support.h2client import H2Client
from tests.support.net import free_port, poll_until
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.upstream import Reply, ScriptedUpstream

HOST = "trace.test"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


@pytest.fixture(scope="module")
def otel_env() -> Iterator[None]:
    """The gateways started by this module inherit these (the test process's environment)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAST_EXPORT.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def up(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("traced")


def config(up_port: int, tracing: dict[str, Any], dead_port: int = 0
           ) -> Callable[[int], str]:
    return lambda port: r.dump(
        r.gateway(port, tracing=tracing),
        r.route("main", hostnames=[HOST], rules=[
            r.rule({"prefix": "/api"}, name="api", forward=r.forward("traced")),
            r.rule({"prefix": "/retry"}, name="retry", forward=r.forward(
                "traced", retries={"attempts": 2, "on": ["5xx"]})),
            r.rule({"prefix": "/denied"}, name="denied", forward=r.forward("traced"),
                   policies=[{"ipFilter": {"deny": ["127.0.0.0/8"]}}]),
            r.rule({"prefix": "/dead"}, name="dead", forward=r.forward("dead")),
        ]),
        r.upstream("traced", up_port),
        r.upstream("dead", dead_port or free_port()),
    )


@pytest.fixture(scope="module")
def edge(otel_env, module_gateways, up, receiver) -> Gateway:
    """Samples every new trace."""
    return module_gateways(config(up.port, {
        "otlpEndpoint": receiver.url, "sampling": 1.0, "serviceName": "edge"}))


@pytest.fixture(scope="module")
def parent_led(otel_env, module_gateways, up, receiver) -> Gateway:
    """Samples no new trace: only a sampled parent makes spans."""
    return module_gateways(config(up.port, {
        "otlpEndpoint": receiver.url + "/v1/traces", "sampling": 0.0,
        "serviceName": "parent-led"}))


def sent_upstream(up: ScriptedUpstream) -> tuple[str, str, str]:
    """(trace id, parent span id, flags) of the one traceparent the upstream got last."""
    values = up.last.head.get_all("traceparent")
    assert len(values) == 1, values
    match = TRACEPARENT.match(values[0])
    assert match, values[0]
    return match.group(1), match.group(2), match.group(3)


def one(spans: list[ReceivedSpan], kind: str) -> ReceivedSpan:
    found = [s for s in spans if s.kind == kind]
    assert len(found) == 1, found
    return found[0]


def logged(gw: Gateway, trace: str) -> dict[str, Any]:
    """The access-log line of the request of ``trace`` (lines are written in batches)."""
    return poll_until(lambda: next((line for line in gw.access_log()
                                    if line.get("trace_id") == trace), None),
                      5, message=f"an access-log line with trace_id {trace}")


def sampled_sentinel(gw: Gateway, receiver: OtlpReceiver) -> None:
    """A sampled request, sent after others and waited for: spans leave a worker in order,
    so what was not received by the time its spans are was not exported."""
    trace = f"{time.time_ns():032x}"[-32:]
    roundtrip(gw.port, "GET", "/api/sentinel", host=HOST,
              headers={"traceparent": f"00-{trace}-{PARENT_SPAN}-01"})
    receiver.wait_trace(trace, 2)


def test_a_new_trace_gets_a_server_and_a_client_span(edge, up, receiver) -> None:
    up.reset()
    response = roundtrip(edge.port, "GET", "/api/items?x=1", host=HOST,
                         headers={"user-agent": "tracing-test/1"})
    assert response.status == 200
    trace, parent, flags = sent_upstream(up)
    assert flags == "01"
    spans = receiver.wait_trace(trace, 2)
    server, client = one(spans, "SERVER"), one(spans, "CLIENT")
    assert server.parent_span_id == ""  # a new trace: the gateway's span is its root
    assert client.parent_span_id == server.span_id
    assert client.span_id == parent  # the upstream's parent is the try's CLIENT span
    assert server.name == "GET default/main#api"
    assert server.service == client.service == "edge"
    assert server.status == client.status == "UNSET"
    assert server.attributes == server.attributes | {
        "http.request.method": "GET", "url.path": "/api/items", "url.scheme": "http",
        "http.route": "default/main#api", "http.response.status_code": 200,
        "client.address": "127.0.0.1", "server.address": HOST,
        "network.protocol.version": "1.1", "user_agent.original": "tracing-test/1",
        "propylon.gateway": "default/gw",
        "propylon.request_id": response.header("x-request-id"),
    }
    assert client.attributes == client.attributes | {
        "http.request.method": "GET", "server.address": "127.0.0.1", "server.port": up.port,
        "http.response.status_code": 200, "propylon.upstream": "default/traced"}
    assert "http.request.resend_count" not in client.attributes
    assert server.start_ns <= client.start_ns <= client.end_ns <= server.end_ns
    assert logged(edge, trace)["path"] == "/api/items"


def test_a_sampled_parent_is_continued_with_its_tracestate(parent_led, up, receiver) -> None:
    up.reset()
    roundtrip(parent_led.port, "GET", "/api/a", host=HOST, headers={
        "traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01", "tracestate": "vendor=abc,x=1"})
    trace, parent, flags = sent_upstream(up)
    assert (trace, flags) == (PARENT_TRACE, "01")
    assert parent != PARENT_SPAN
    assert up.last.head.get_all("tracestate") == ["vendor=abc,x=1"]
    spans = [s for s in receiver.wait_trace(trace, 2) if s.service == "parent-led"]
    server = one(spans, "SERVER")
    assert server.parent_span_id == PARENT_SPAN
    assert server.trace_state == "vendor=abc,x=1"
    assert one(spans, "CLIENT").span_id == parent


def test_an_unsampled_parent_stays_unsampled(edge, up, receiver) -> None:
    up.reset()
    unsampled = "a" * 31 + "1"
    roundtrip(edge.port, "GET", "/api/a", host=HOST,
              headers={"traceparent": f"00-{unsampled}-{PARENT_SPAN}-00"})
    trace, parent, flags = sent_upstream(up)
    assert (trace, flags) == (unsampled, "00")
    assert parent != PARENT_SPAN  # a new span id even when nothing is recorded
    sampled_sentinel(edge, receiver)
    assert receiver.trace(unsampled) == []


def test_without_a_parent_the_ratio_decides(parent_led, up, receiver) -> None:
    up.reset()
    roundtrip(parent_led.port, "GET", "/api/a", host=HOST)
    trace, _, flags = sent_upstream(up)
    assert flags == "00"  # sampling 0.0: a new trace, not sampled
    assert trace != PARENT_TRACE
    assert logged(parent_led, trace)["status"] == 200  # unsampled traces are logged too
    sampled_sentinel(parent_led, receiver)
    assert receiver.trace(trace) == []


@pytest.mark.parametrize("fields", [
    pytest.param([("traceparent", f"00-{PARENT_TRACE.upper()}-{PARENT_SPAN}-01")],
                 id="upper-case"),
    pytest.param([("traceparent", f"ff-{PARENT_TRACE}-{PARENT_SPAN}-01")], id="version-ff"),
    pytest.param([("traceparent", f"00-{'0' * 32}-{PARENT_SPAN}-01")], id="zero-trace-id"),
    pytest.param([("traceparent", f"00-{PARENT_TRACE}-{'0' * 16}-01")], id="zero-span-id"),
    pytest.param([("traceparent", f"00-{PARENT_TRACE}-{PARENT_SPAN}-01-extra")],
                 id="version-00-with-more"),
    pytest.param([("traceparent", f"00-{PARENT_TRACE}-{PARENT_SPAN}")], id="short"),
    pytest.param([("traceparent", "garbage")], id="garbage"),
    pytest.param([("traceparent", f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"),
                  ("traceparent", f"00-{PARENT_TRACE}-{PARENT_SPAN}-01")], id="twice"),
])
def test_an_invalid_traceparent_is_treated_as_absent(edge, up, receiver, fields) -> None:
    up.reset()
    response = roundtrip(edge.port, "GET", "/api/a", host=HOST,
                         headers=[*fields, ("tracestate", "vendor=dropped")])
    assert response.status == 200
    trace, _, flags = sent_upstream(up)
    assert trace != PARENT_TRACE
    assert flags == "01"  # a new trace, sampled at 1.0
    assert up.last.head.get_all("tracestate") == []  # it belonged to the invalid parent
    assert one(receiver.wait_trace(trace, 2), "SERVER").parent_span_id == ""


def test_a_later_version_is_read_as_version_00(edge, up) -> None:
    up.reset()
    roundtrip(edge.port, "GET", "/api/a", host=HOST,
              headers={"traceparent": f"01-{PARENT_TRACE}-{PARENT_SPAN}-01-future"})
    assert sent_upstream(up)[0] == PARENT_TRACE


def test_each_upstream_try_is_a_client_span(edge, up, receiver) -> None:
    answers = iter([503, 200])
    up.reset(lambda request: Reply(status=next(answers, 200), body=b"ok"))
    response = roundtrip(edge.port, "GET", "/retry/x", host=HOST)
    assert response.status == 200
    first, second = up.requests
    parents = [TRACEPARENT.match(req.header("traceparent") or "") for req in (first, second)]
    assert all(parents), parents
    trace = parents[0].group(1)  # type: ignore[union-attr]
    assert parents[1].group(1) == trace  # type: ignore[union-attr]
    spans = receiver.wait_trace(trace, 3)
    server = one(spans, "SERVER")
    clients = sorted((s for s in spans if s.kind == "CLIENT"), key=lambda s: s.start_ns)
    assert [c.span_id for c in clients] == [p.group(2) for p in parents]  # type: ignore[union-attr]
    assert all(c.parent_span_id == server.span_id for c in clients)
    assert clients[0].status == "ERROR"
    assert clients[0].attributes["http.response.status_code"] == 503
    assert clients[1].attributes["http.response.status_code"] == 200
    assert clients[1].attributes["http.request.resend_count"] == 1
    assert server.status == "UNSET"
    assert server.attributes["http.response.status_code"] == 200


def test_a_policy_refusal_is_an_error_naming_the_policy(edge, up, receiver) -> None:
    up.reset()
    response = roundtrip(edge.port, "GET", "/denied", host=HOST,
                         headers={"traceparent": f"00-{'b' * 32}-{PARENT_SPAN}-01"})
    assert response.status == 403
    assert up.requests == []
    (server,) = receiver.wait_trace("b" * 32, 1)
    assert server.kind == "SERVER"
    assert server.status == "ERROR"
    assert "ipFilter" in server.status_message
    assert server.attributes["propylon.policy.type"] == "ipFilter"
    assert server.attributes["http.response.status_code"] == 403


def test_an_upstream_failure_is_an_error(edge, receiver) -> None:
    response = roundtrip(edge.port, "GET", "/dead", host=HOST,
                         headers={"traceparent": f"00-{'c' * 32}-{PARENT_SPAN}-01"})
    assert response.status == 502
    spans = receiver.wait_trace("c" * 32, 2)
    server, client = one(spans, "SERVER"), one(spans, "CLIENT")
    assert server.status == "ERROR"
    assert server.attributes["error.type"] == "502"
    assert client.status == "ERROR"
    assert client.attributes["error.type"].startswith("connect")
    assert "http.response.status_code" not in client.attributes


def test_http2_requests_say_so(edge, up, receiver) -> None:
    up.reset()
    with H2Client(edge.port) as client:
        answer = client.get("/api/h2", authority=HOST)
    assert answer.status == 200
    trace, _, _ = sent_upstream(up)
    server = one(receiver.wait_trace(trace, 2), "SERVER")
    assert server.attributes["network.protocol.version"] == "2"


def test_two_tiers_make_one_trace(otel_env, gateways, up, receiver) -> None:
    """The central ingress pattern: edge gateway -> team gateway -> upstream."""
    team = gateways(lambda port: r.dump(
        r.gateway(port, name="team", tracing={"otlpEndpoint": receiver.url,
                                              "serviceName": "team"}),
        r.route("team", rules=[r.rule({"prefix": "/"}, name="all", forward=r.forward("svc"))]),
        r.upstream("svc", up.port)), wait=False)
    edge = gateways(lambda port: r.dump(
        r.gateway(port, name="edge", tracing={"otlpEndpoint": receiver.url,
                                              "serviceName": "edge"}),
        r.route("ingress", rules=[
            r.rule({"prefix": "/"}, name="teams", forward=r.forward("team-gw"))]),
        r.upstream("team-gw", team.port)), wait=False)
    for gateway in (team, edge):  # both start together
        gateway.wait_ready()
    up.reset()
    assert roundtrip(edge.port, "GET", "/orders", host=HOST).status == 200
    trace, parent, _ = sent_upstream(up)
    spans = receiver.wait_trace(trace, 4)
    by = {(s.service, s.kind): s for s in spans}
    assert len(by) == 4, spans
    edge_server, edge_client = by["edge", "SERVER"], by["edge", "CLIENT"]
    team_server, team_client = by["team", "SERVER"], by["team", "CLIENT"]
    assert edge_server.parent_span_id == ""
    assert edge_client.parent_span_id == edge_server.span_id
    assert team_server.parent_span_id == edge_client.span_id
    assert team_client.parent_span_id == team_server.span_id
    assert team_client.span_id == parent
    assert edge_client.attributes["server.port"] == team.port


def test_otel_environment_variables_fill_the_gaps(gateways, up, receiver, monkeypatch
                                                   ) -> None:
    for name, value in {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                        "OTEL_SERVICE_NAME": "from-env",
                        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                        "OTEL_TRACES_SAMPLER_ARG": "0"}.items():
        monkeypatch.setenv(name, value)
    gw = gateways(config(up.port, {}))
    up.reset()
    roundtrip(gw.port, "GET", "/api/a", host=HOST)
    assert sent_upstream(up)[2] == "00"  # OTEL_TRACES_SAMPLER_ARG=0: new traces unsampled
    trace = "d" * 32
    roundtrip(gw.port, "GET", "/api/a", host=HOST,
              headers={"traceparent": f"00-{trace}-{PARENT_SPAN}-01"})
    spans = receiver.wait_trace(trace, 2)  # sent to OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces
    assert {s.service for s in spans} == {"from-env"}


@pytest.mark.parametrize("collector", ["refused", "hung"])
def test_a_collector_away_neither_fails_nor_slows_requests(gateways, up, monkeypatch,
                                                           collector) -> None:
    """Spans are dropped, and counted, rather than kept or waited for."""
    hung = OtlpReceiver().start() if collector == "hung" else None
    if hung is not None:
        hung.mode = "hang"
    endpoint = hung.url if hung is not None else f"http://127.0.0.1:{free_port()}"
    for name, value in {**FAST_EXPORT, "OTEL_BSP_MAX_QUEUE_SIZE": "16",
                        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8",
                        "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}.items():
        monkeypatch.setenv(name, value)
    try:
        gw = gateways(config(up.port, {"otlpEndpoint": endpoint, "sampling": 1.0}))
        up.reset()
        slowest = 0.0
        started = time.monotonic()
        for index in range(300):
            sent = time.monotonic()
            assert roundtrip(gw.port, "GET", f"/api/{index}", host=HOST).status == 200
            slowest = max(slowest, time.monotonic() - sent)
        assert slowest < 0.5, f"a request took {slowest:.3f}s"
        assert time.monotonic() - started < 30
        poll_until(lambda: metric_value(gw.metrics(), "propylon_tracing_spans_dropped_total",
                                        reason="queue_full") > 0,
                   timeout=10, message="spans dropped on a full queue")
        poll_until(lambda: metric_value(gw.metrics(), "propylon_tracing_spans_dropped_total",
                                        reason="export_failed") > 0,
                   timeout=15, message="failed exports counted")
        assert metric_value(gw.metrics(), "propylon_tracing_spans_exported_total") == 0
        stopped = time.monotonic()
        gw.stop()
        assert time.monotonic() - stopped < 10  # the exit flush is bounded
    finally:
        if hung is not None:
            hung.stop()

