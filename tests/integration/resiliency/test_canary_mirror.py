"""Weighted backends (canary) and request mirroring, measured over hundreds of requests."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.integration.resiliency.conftest import endpoints
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway, metric_value
from tests.support.net import poll_until
from tests.support.upstream import Reply, pattern_body


@pytest.fixture(scope="module")
def ups(module_upstreams):
    names = ("stable", "canary", "live", "dark", "primary", "shadow", "primary20", "shadow20",
             "primaryslow", "shadowmute")
    return {name: module_upstreams(name) for name in names}


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    u = ups
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("canary", hostnames=["canary.test"], rules=[
            r.rule(forward=r.forward(("stable", 90), ("canary", 10)))]),
        r.route("zero", hostnames=["zero.test"], rules=[
            r.rule(forward=r.forward(("live", 1), ("dark", 0)))]),
        r.route("mirror", hostnames=["mirror.test"], rules=[
            r.rule(forward=r.forward("primary", mirror={"upstream": "shadow", "percent": 100}))]),
        r.route("mirror20", hostnames=["mirror20.test"], rules=[
            r.rule(forward=r.forward("primary20",
                                     mirror={"upstream": "shadow20", "percent": 20}))]),
        r.route("mirrormute", hostnames=["mirrormute.test"], rules=[
            r.rule(forward=r.forward("primaryslow", timeout="1s",
                                     mirror={"upstream": "shadowmute", "percent": 100}))]),
        *(r.upstream(name, up.port) for name, up in u.items()),
    ))


def send(port: int, host: str, count: int, method: str = "GET", body: bytes = b"",
         latencies: list[float] | None = None) -> Counter:
    names: Counter = Counter()
    with RawClient(port) as client:
        for i in range(count):
            start = time.monotonic()
            client.request(method, f"/m/{i}", body=body, host=host)
            response = client.read_final(method)
            if latencies is not None:
                latencies.append(time.monotonic() - start)
            assert response.status == 200, response
            names[response.header("x-upstream")] += 1
    return names


def test_canary_split_90_10(gw, figure) -> None:
    counts = send(gw.port, "canary.test", 500)
    share = counts["canary"] / 500
    figure("90/10 over 500: stable/canary", f"{counts['stable']}/{counts['canary']}")
    assert counts["stable"] + counts["canary"] == 500
    assert 0.05 <= share <= 0.15, counts


def test_weight_zero_gets_nothing(gw, ups) -> None:
    assert send(gw.port, "zero.test", 100) == {"live": 100}
    assert ups["dark"].requests == []


def test_mirror_copies_every_request_with_body(gw, ups, figure) -> None:
    primary, shadow = ups["primary"], ups["shadow"]
    body = pattern_body(5000)
    assert send(gw.port, "mirror.test", 20, "POST", body) == {"primary": 20}
    copies = shadow.wait_for_requests(20, timeout=5)
    assert len(copies) == 20
    assert all(q.header("x-propylon-mirror") == "1" for q in copies)
    assert all(q.body == body and q.method == "POST" for q in copies)
    assert sorted(q.target for q in copies) == sorted(q.target for q in primary.requests)
    assert all(q.header("x-propylon-mirror") is None for q in primary.requests)

    # a mirror answering after 1 s costs the client nothing
    shadow.reset()
    shadow.reply(Reply(delay=1.0, body=b"ignored"))
    latencies: list[float] = []
    start = time.monotonic()
    assert send(gw.port, "mirror.test", 20, "POST", body, latencies) == {"primary": 20}
    total = time.monotonic() - start
    figure("slow mirror (1s): client max latency (s)", round(max(latencies), 3))
    figure("slow mirror (1s): 20 sequential requests took (s)", round(total, 3))
    assert max(latencies) < 0.3, latencies
    assert total < 1.0
    shadow.wait_for_requests(20, timeout=5)


def test_mirror_percent_20(gw, ups, figure) -> None:
    shadow = ups["shadow20"]
    send(gw.port, "mirror20.test", 500)
    # copies are fire and forget: wait until they stop arriving
    last = [-1]

    def settled() -> bool:
        count = len(shadow.requests)
        done = count == last[0]
        last[0] = count
        return done

    poll_until(settled, 5, interval=0.2, message="mirror copies settle")
    share = len(shadow.requests) / 500
    figure("mirror percent 20 over 500: copies", len(shadow.requests))
    assert 0.15 <= share <= 0.25, share
    assert len(ups["primary20"].requests) == 500


def test_mirror_that_never_answers_is_dropped_at_the_route_timeout(gw, ups) -> None:
    """A copy gets the route's deadline: a mirror endpoint that accepts and never answers
    does not keep one connection (and one active request) per mirrored request for ever."""
    shadow = ups["shadowmute"]
    shadow.reply(Reply(delay=120.0, body=b"never in time"))
    latencies: list[float] = []
    assert send(gw.port, "mirrormute.test", 5, latencies=latencies) == {"primaryslow": 5}
    assert max(latencies) < 0.3, latencies
    shadow.wait_for_requests(5, timeout=5)
    port = shadow.port

    def held() -> int:
        return int(endpoints(gw, "default/shadowmute")[port]["active_requests"])

    assert held() > 0  # the copies are still waiting for their answers
    # route timeout 1 s: the copies are dropped then, not after the 120 s the answers take
    poll_until(lambda: held() == 0, 5, message="mirrored copies dropped at the route timeout")


def test_a_mirror_keeps_to_its_upstreams_circuit_breaker(gateways, upstreams) -> None:
    """Copies asked the mirror's pool for connections without looking at its circuit breaker:
    a mirror that never answers, maxConnections 2, got a connection per mirrored request.
    Over the breaker a copy is dropped (and counted as its overflow), never queued."""
    primary, shadow = upstreams("bprimary"), upstreams("bshadow")
    shadow.reply(Reply(delay=30.0, body=b"never in time"))
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("m", rules=[r.rule(forward=r.forward(
            "bprimary", timeout="20s", mirror={"upstream": "bshadow", "percent": 100}))]),
        r.upstream("bprimary", primary.port),
        r.upstream("bshadow", shadow.port, circuitBreaker={
            "maxConnections": 2, "maxPendingRequests": 100, "maxRequests": 100}),
    ))
    with RawClient(gw.port) as client:
        for i in range(10):
            client.request("GET", f"/b/{i}")
            assert client.read_final().status == 200
    shadow.wait_for_requests(2, timeout=5)
    time.sleep(0.5)  # more copies would have arrived by now
    assert len({q.conn_id for q in shadow.requests}) == 2, len(shadow.requests)
    assert metric_value(gw.metrics(), "propylon_upstream_events_total",
                        upstream="default/bshadow", kind="circuit_breaker_overflow") == 8
