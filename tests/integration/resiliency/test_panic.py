"""Panic mode: below panicThreshold percent of healthy endpoints, balance over all of them."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.integration.resiliency.conftest import endpoints
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway
from tests.support.net import poll_until
from tests.support.upstream import RecordedRequest, Reply

ACTIVE = {"active": {"interval": "200ms", "timeout": "300ms", "healthyThreshold": 1,
                     "unhealthyThreshold": 1}}


@pytest.fixture(scope="module")
def ups(module_upstreams):
    return [module_upstreams(name) for name in ("a", "b", "c")]


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    ports = [u.port for u in ups]
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("p50", hostnames=["p50.test"], rules=[r.rule(forward=r.forward("panic50"))]),
        r.route("p0", hostnames=["p0.test"], rules=[r.rule(forward=r.forward("panic0"))]),
        r.upstream("panic50", *ports, healthCheck=ACTIVE, loadBalancer={"panicThreshold": 50}),
        r.upstream("panic0", *ports, healthCheck=ACTIVE, loadBalancer={"panicThreshold": 0}),
        r.route("drained", hostnames=["drained.test"],
                rules=[r.rule(forward=r.forward("drained"))]),
        # c drained (weight 0): a and b are the capacity, and a is half of it
        r.upstream("drained", ports[0], ports[1], (ports[2], 0), healthCheck=ACTIVE,
                   loadBalancer={"panicThreshold": 50}),
    ))


def failing(name: str):
    def handler(request: RecordedRequest) -> Reply:
        return Reply(status=503, headers=[("x-upstream", name)], body=b"sick")
    return handler


def outcomes(port: int, host: str, count: int) -> Counter:
    seen: Counter = Counter()
    with RawClient(port) as client:
        for _ in range(count):
            client.request("GET", "/x", host=host)
            response = client.read_final()
            seen[(response.status, response.header("x-upstream"))] += 1
    return seen


@pytest.fixture(scope="module")
def two_sick(gw, ups):
    a, b, c = ups
    b.handler, c.handler = failing("b"), failing("c")

    def settled() -> bool:
        for name in ("default/panic50", "default/panic0", "default/drained"):
            state = endpoints(gw, name)
            if not (state[a.port]["healthy"] and not state[b.port]["healthy"]
                    and not state[c.port]["healthy"]):
                return False
        return True

    poll_until(settled, 5, message="b and c unhealthy in both upstreams")
    return ups


def test_panic_threshold_50_balances_over_all(gw, two_sick, figure) -> None:
    seen = outcomes(gw.port, "p50.test", 30)
    figure("panicThreshold 50, 1 of 3 healthy: outcomes over 30", dict(
        (f"{s} {n}", k) for (s, n), k in seen.items()))
    assert seen == {(200, "a"): 10, (503, "b"): 10, (503, "c"): 10}, seen
    assert "default/panic50" in gw.stats()["panic"]


def test_panic_threshold_0_uses_only_the_healthy(gw, two_sick) -> None:
    seen = outcomes(gw.port, "p0.test", 30)
    assert seen == {(200, "a"): 30}, seen
    assert "default/panic0" not in gw.stats()["panic"]


def test_a_drained_endpoint_counts_for_no_capacity(gw, two_sick) -> None:
    """A weight-0 endpoint takes no traffic: down, it made 1 healthy of 3 (panic, half the
    requests to the sick b); of the endpoints that take traffic, 1 of 2 are healthy, 50 %, no
    panic."""
    assert outcomes(gw.port, "drained.test", 30) == {(200, "a"): 30}
    assert "default/drained" not in gw.stats()["panic"]
