"""Passive health checking (outlier detection): ejection after consecutive errors, growing
ejection times, the maxEjectionPercent cap, readmission, and an endpoint killed under load."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.integration.resiliency.conftest import endpoints, events
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway
from tests.support.load import LoadClient
from tests.support.net import poll_until
from tests.support.upstream import Reply

KILL_PASSIVE = {"consecutiveErrors": 3, "baseEjectionTime": "5s", "maxEjectionPercent": 50}


def passive(**extra) -> dict:
    spec = {"consecutiveErrors": 3, "baseEjectionTime": "500ms", "maxEjectionTime": "10s",
            "maxEjectionPercent": 50}
    return {"passive": {**spec, **extra}}


def send(port: int, host: str, count: int) -> Counter:
    """Statuses and servers of ``count`` requests on one connection (reopened after closes)."""
    seen: Counter = Counter()
    client = RawClient(port)
    try:
        for _ in range(count):
            client.request("GET", "/p", host=host)
            response = client.read_final()
            seen[(response.status, response.header("x-upstream"))] += 1
            if (response.header("connection") or "") == "close":
                client.close()
                client = RawClient(port)
    finally:
        client.close()
    return seen


@pytest.fixture(scope="module")
def ups(module_upstreams):
    return {name: module_upstreams(name)
            for name in ("good", "bad", "g2", "closer", "m1", "m2", "m3")}


@pytest.fixture(scope="module")
def killable(module_proc_upstreams):
    return {"retry": [module_proc_upstreams(f"r{i}") for i in range(3)],
            "plain": [module_proc_upstreams(f"n{i}") for i in range(3)]}


@pytest.fixture(scope="module")
def gw(module_gateways, ups, killable) -> Gateway:
    u = ups
    retry = {"attempts": 2, "on": ["connect-failure", "reset"]}
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("eject", hostnames=["eject.test"], rules=[r.rule(forward=r.forward("eject"))]),
        r.route("close", hostnames=["close.test"], rules=[r.rule(forward=r.forward("close"))]),
        r.route("cap", hostnames=["cap.test"], rules=[r.rule(forward=r.forward("cap"))]),
        r.route("kr", hostnames=["kill-retry.test"],
                rules=[r.rule(forward=r.forward("kill-retry", retries=retry))]),
        r.route("kn", hostnames=["kill-plain.test"],
                rules=[r.rule(forward=r.forward("kill-plain"))]),
        r.upstream("eject", u["good"].port, u["bad"].port, healthCheck=passive()),
        r.upstream("close", u["g2"].port, u["closer"].port, healthCheck=passive()),
        r.upstream("cap", u["m1"].port, u["m2"].port, u["m3"].port,
                   healthCheck=passive(consecutiveErrors=2, maxEjectionPercent=34,
                                       baseEjectionTime="10s")),
        r.upstream("kill-retry", *(p.port for p in killable["retry"]),
                   healthCheck={"passive": KILL_PASSIVE}),
        r.upstream("kill-plain", *(p.port for p in killable["plain"]),
                   healthCheck={"passive": KILL_PASSIVE}),
    ))


def ejected(gw: Gateway, upstream: str, port: int) -> bool:
    return endpoints(gw, upstream)[port]["ejected_in_workers"] > 0


def test_5xx_ejection_grows_and_ends(gw, ups, figure) -> None:
    bad = ups["bad"]
    bad.reply(Reply(status=503, body=b"down", headers=[("x-upstream", "bad")]))
    seen = send(gw.port, "eject.test", 6)  # round robin: the third 503 comes with request 6
    assert seen == {(200, "good"): 3, (503, "bad"): 3}, seen
    state = endpoints(gw, "default/eject")[bad.port]
    assert state["ejected_in_workers"] == 1 and state["ejections"] == 1, state
    assert events(gw, "default/eject", "ejection") == 1
    t0 = time.monotonic()
    assert send(gw.port, "eject.test", 10) == {(200, "good"): 10}, "ejected endpoint served"
    poll_until(lambda: not ejected(gw, "default/eject", bad.port), 5, interval=0.02,
               message="first ejection ends")
    first = time.monotonic() - t0
    # back in rotation, still failing: ejected again after 3 more errors, for twice as long
    poll_until(lambda: send(gw.port, "eject.test", 1)[(503, "bad")] or None, 3,
               message="bad readmitted")
    seen = send(gw.port, "eject.test", 4)
    assert seen[(503, "bad")] == 2, seen
    state = endpoints(gw, "default/eject")[bad.port]
    assert state["ejections"] == 2 and state["ejected_in_workers"] == 1, state
    t1 = time.monotonic()
    bad.reset()  # recovers while ejected
    assert send(gw.port, "eject.test", 6) == {(200, "good"): 6}
    poll_until(lambda: not ejected(gw, "default/eject", bad.port), 5, interval=0.02,
               message="second ejection ends")
    second = time.monotonic() - t1
    figure("first ejection (base 500ms) seconds", round(first, 2))
    figure("second ejection seconds", round(second, 2))
    assert 0.3 <= first <= 1.0, first
    assert 0.8 <= second <= 1.6 and second > first * 1.5, (first, second)
    # readmitted and healthy: it serves again (the sweep rebuilds the balancer within 0.5s)
    poll_until(lambda: send(gw.port, "eject.test", 4)[(200, "bad")] or None, 3,
               message="bad serves again")
    assert events(gw, "default/eject", "ejection") == 2


def test_connection_closing_endpoint_is_ejected(gw, ups) -> None:
    closer = ups["closer"]
    closer.reply(Reply(raw=b""))  # reads the request, closes without answering
    seen = send(gw.port, "close.test", 12)
    assert seen[(200, "g2")] >= 6, seen
    assert sum(n for (status, _), n in seen.items() if status == 502) <= 3, seen
    assert ejected(gw, "default/close", closer.port)
    assert send(gw.port, "close.test", 10) == {(200, "g2"): 10}


def test_max_ejection_percent_is_respected(gw, ups, figure) -> None:
    for name in ("m1", "m2", "m3"):
        ups[name].reply(Reply(status=500, headers=[("x-upstream", name)]))
    send(gw.port, "cap.test", 30)
    states = endpoints(gw, "default/cap")
    count = sum(1 for s in states.values() if s["ejected_in_workers"])
    figure("endpoints ejected of 3 (maxEjectionPercent 34, all failing)", count)
    assert count == 1, states


@pytest.mark.parametrize("mode", ["retry", "plain"])
def test_endpoint_killed_under_load(gw, killable, mode, figure) -> None:
    procs = killable[mode]
    host = f"kill-{mode}.test"
    load = LoadClient(gw.port, host, duration=3.0, max_requests=50_000)
    load.start()
    poll_until(lambda: load.snapshot()[0] >= 50, 5, message="load running")
    time.sleep(1.0)  # a second of steady load, then the kill
    procs[1].kill()
    killed_at = load.snapshot()[0]
    load.join(10)
    assert not load.is_alive()
    result = load.result
    figure(f"{mode}: total requests", result.total)
    figure(f"{mode}: client errors", result.errors)
    figure(f"{mode}: errors by kind", dict(result.error_kinds))
    figure(f"{mode}: requests before the kill", killed_at)
    state = endpoints(gw, f"default/kill-{mode}")[procs[1].port]
    assert state["ejections"] >= 1, state
    assert result.served_by[procs[0].name] > 0 and result.served_by[procs[2].name] > 0
    assert result.total >= 500
    if mode == "retry":
        assert result.errors <= 1, result
    else:
        assert result.errors <= 6, result  # about consecutiveErrors, then ejected
