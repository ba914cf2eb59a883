"""Listener limits and timeouts: 414, 431, 408 (slowloris), keep-alive and stream idle
timeouts, and the per-worker connection cap (accept paused, then resumed).

Timeouts are set to 1 s so each test waits at most a few seconds.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.integration.edge._helpers import forward_all, listener_gateway
from tests.support import resources as r
from tests.support.client import ConnectionClosed, RawClient, roundtrip
from tests.support.gateway import Gateway, metric_value
from tests.support.net import poll_until
from tests.support.upstream import Reply, ScriptedUpstream

LIMITS = {"headerReadTimeout": "1s", "keepAliveTimeout": "1s", "streamIdleTimeout": "1s"}


@pytest.fixture(scope="module")
def main_up(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("main")


@pytest.fixture(scope="module")
def gw(module_gateways, main_up: ScriptedUpstream) -> Gateway:
    return module_gateways(lambda port: r.dump(
        listener_gateway(port, limits=LIMITS), *forward_all("main", main_up.port)))


@pytest.fixture
def up(gw: Gateway, main_up: ScriptedUpstream) -> ScriptedUpstream:
    main_up.reset()
    return main_up


def many(count: int, size: int) -> list[tuple[str, str]]:
    return [(f"X-H{i}", "v" * size) for i in range(count)]


@pytest.mark.parametrize(("target", "headers", "status"), [
    pytest.param("/" + "a" * 9000, [], 414, id="request-target-over-8KiB-414"),
    pytest.param("/", many(70, 1000), 431, id="header-block-over-60KiB-431"),
    pytest.param("/", many(101, 4), 431, id="header-count-over-100-431"),
])
def test_size_limits(gw, up, target: str, headers, status: int) -> None:
    with RawClient(gw.port) as client:
        client.request("GET", target, headers)
        response = client.read_final()
        assert response.status == status, response
        assert client.closed_by_peer(3)
    assert up.requests == []


@pytest.mark.parametrize("prefix", [
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ", id="one-field-value-never-ends"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX-", id="one-field-name-never-ends"),
])
def test_an_unfinished_field_is_bounded_too(gw, up, prefix: bytes) -> None:
    """A field whose line never ends is buffered by the parser until it does: the gateway
    bounds the unfinished head as a whole (431 + close) instead of buffering megabytes."""
    with RawClient(gw.port, timeout=5) as client:
        client.send(prefix)
        with contextlib.suppress(OSError):  # the gateway may close while we still send
            for _ in range(64):  # at most 4 MiB, far above the 60 KiB header limit
                client.send(b"v" * 65536)
        response = client.read_final()
        assert response.status == 431, response
        assert client.closed_by_peer(3)
    assert up.requests == []


@pytest.mark.parametrize(("target", "headers"), [
    pytest.param("/" + "a" * 8000, [], id="request-target-just-under"),
    pytest.param("/", many(98, 4), id="header-count-just-under"),
])
def test_sizes_under_the_limits_pass(gw, up, target: str, headers) -> None:
    assert roundtrip(gw.port, "GET", target, headers).status == 200


@pytest.mark.parametrize("partial", [
    pytest.param(b"", id="nothing-sent"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ", id="half-a-head"),
])
def test_header_read_timeout_answers_408_and_closes(gw, up, partial: bytes) -> None:
    with RawClient(gw.port, timeout=5) as client:
        if partial:
            client.send(partial)
        started = time.monotonic()
        try:
            response = client.read_final()
        except ConnectionClosed:
            # with no byte sent there is no request to answer: closing is enough
            assert not partial, "closed without a 408"
        else:
            assert response.status == 408, response
            assert client.closed_by_peer(3)
        assert 0.5 < time.monotonic() - started < 4
    assert up.requests == []


def test_keep_alive_timeout_closes_an_idle_connection(gw, up) -> None:
    with RawClient(gw.port, timeout=5) as client:
        client.request("GET", "/ka")
        assert client.read_final().status == 200
        started = time.monotonic()
        assert client.closed_by_peer(4), "idle connection still open"
        assert 0.5 < time.monotonic() - started < 4


def test_stream_idle_timeout_cuts_a_stalled_upstream(gw, up) -> None:
    up.reply(Reply(body=b"late", delay=8))
    with RawClient(gw.port, timeout=6) as client:
        client.request("GET", "/stall")
        started = time.monotonic()
        try:
            response = client.read_final()
        except ConnectionClosed:
            pass  # cut without an answer is fine
        else:
            assert response.status >= 500, response
        assert time.monotonic() - started < 4, "exchange was not cut by streamIdleTimeout"


def test_stream_idle_timeout_cuts_a_stalled_request_body(gw, up) -> None:
    with RawClient(gw.port, timeout=6) as client:
        client.request("POST", "/upload", [("Content-Length", "100")], b"0123456789")
        started = time.monotonic()
        try:
            response = client.read_final("POST")
        except ConnectionClosed:
            pass
        else:
            assert response.status in (408, 502, 503, 504), response
        assert client.closed_by_peer(4)
        assert time.monotonic() - started < 4, "stalled body not cut by streamIdleTimeout"


def test_max_connections_pauses_accept_until_one_closes(gateways, upstreams) -> None:
    upstream = upstreams("capped")
    gw = gateways(lambda port: r.dump(
        listener_gateway(port, limits={"maxConnections": 3}),
        *forward_all("capped", upstream.port)))
    clients = [RawClient(gw.port, timeout=5) for _ in range(3)]
    try:
        for client in clients:  # each one is accepted and served
            client.request("GET", "/held")
            assert client.read_final().status == 200
        with RawClient(gw.port, timeout=5) as fourth:
            fourth.request("GET", "/fourth")
            with pytest.raises(TimeoutError):
                fourth.read_final(timeout=1.0)
            clients.pop().close()
            response = fourth.read_final(timeout=5)
            assert response.status == 200, response
    finally:
        for client in clients:
            client.close()
    assert [q.target for q in upstream.requests][-1] == "/fourth"


@pytest.fixture(scope="module")
def long_keep_alive_gw(module_gateways, main_up: ScriptedUpstream) -> Gateway:
    """headerReadTimeout 1 s, idle connections kept 30 s."""
    return module_gateways(lambda port: r.dump(listener_gateway(port, limits={
        "headerReadTimeout": "1s", "keepAliveTimeout": "30s"}), *forward_all("main", main_up.port)))


@pytest.mark.parametrize("partial", [
    pytest.param(b"P", id="one-byte"),
    pytest.param(b"PRI * HTTP/2.0\r\n", id="the-preface-line"),
])
def test_a_part_of_the_http2_preface_is_bounded_by_the_header_read_timeout(
        long_keep_alive_gw: Gateway, partial: bytes) -> None:
    """A cleartext listener waits for the HTTP/2 preface before it knows the protocol; a
    client sending a part of it and no more is closed after headerReadTimeout, as one sending
    a part of an HTTP/1.1 head is (not kept until keepAliveTimeout)."""
    with RawClient(long_keep_alive_gw.port, timeout=8) as client:
        client.send(partial)
        started = time.monotonic()
        assert client.closed_by_peer(6), "a partial preface held past headerReadTimeout"
        assert 0.5 < time.monotonic() - started < 4


@pytest.mark.parametrize(("raw", "status"), [
    pytest.param(b"GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="encoded-slash"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="no-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nx_y: 1\r\n\r\n", 400, id="underscore-name"),
    pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, id="target-414"),
    pytest.param(b"BLAH\r\n\r\n", 400, id="garbage-request-line"),
])
def test_a_refused_request_has_an_id_a_log_line_and_a_count(
        gw, up, raw: bytes, status: int) -> None:
    """reference.md: every request gets an id, answers the gateway makes itself included;
    the requests refused before routing are logged and counted as unrouted ones are."""
    before = metric_value(gw.metrics(), "propylon_requests_by_status_total", route="none",
                          status=str(status))
    with RawClient(gw.port, timeout=5) as client:
        client.send(raw)
        response = client.read_final()
    assert response.status == status, response
    request_id = response.header("x-request-id")
    assert request_id and len(request_id) >= 16, response
    line = poll_until(lambda: next((x for x in gw.access_log()
                                    if x["request_id"] == request_id), None),
                      message="the refused request's access log line")
    assert line["status"] == status and line["route"] is None
    assert metric_value(gw.metrics(), "propylon_requests_by_status_total", route="none",
                        status=str(status)) == before + 1
    assert up.requests == []
