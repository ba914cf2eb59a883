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
from tests.support.gateway import Gateway
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
