"""Circuit breaking: over maxRequests or maxPendingRequests the gateway answers 503 at once,
with ``x-propylon-overloaded`` naming the limit; requests under the limit are served."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.integration.resiliency.conftest import events
from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway
from tests.support.load import concurrent
from tests.support.upstream import Reply

N = 20
SLOW = 1.0


@pytest.fixture(scope="module")
def ups(module_upstreams):
    slow = {name: module_upstreams(name) for name in ("cb", "pend")}
    for name, upstream in slow.items():
        upstream.reply(Reply(delay=SLOW, headers=[("x-upstream", name)], body=b"slow ok"))
    return slow


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("cb", hostnames=["cb.test"], rules=[r.rule(forward=r.forward("cb"))]),
        r.route("pend", hostnames=["pend.test"], rules=[r.rule(forward=r.forward("pend"))]),
        r.upstream("cb", ups["cb"].port, circuitBreaker={"maxRequests": 5}),
        r.upstream("pend", ups["pend"].port, circuitBreaker={"maxPendingRequests": 3},
                   connectionPool={"maxConnectionsPerEndpoint": 2}),
    ))


def burst(gw: Gateway, host: str):
    results = concurrent(N, lambda: roundtrip(gw.port, "GET", "/cb", host=host, timeout=15))
    for response, _ in results:
        assert not isinstance(response, BaseException), response
    return results


def test_max_requests(gw, ups, figure) -> None:
    results = burst(gw, "cb.test")
    ok = [(res, t) for res, t in results if res.status == 200]
    refused = [(res, t) for res, t in results if res.status == 503]
    figure("maxRequests 5, 20 concurrent: served / refused", f"{len(ok)}/{len(refused)}")
    figure("slowest refusal (s)", round(max(t for _, t in refused), 3) if refused else None)
    assert len(ok) == 5 and len(refused) == 15, Counter(res.status for res, _ in results)
    assert all(res.header("x-propylon-overloaded") == "max_requests" for res, _ in refused)
    assert all(t < 0.5 * SLOW for _, t in refused), "a refusal waited for the upstream"
    assert all(t >= SLOW * 0.9 for _, t in ok)
    assert len(ups["cb"].requests) == 5
    assert events(gw, "default/cb", "circuit_breaker_overflow") == 15


def test_max_pending_requests(gw, ups, figure) -> None:
    results = burst(gw, "pend.test")
    ok = [(res, t) for res, t in results if res.status == 200]
    refused = [(res, t) for res, t in results if res.status == 503]
    figure("2 connections + maxPendingRequests 3, 20 concurrent: served / refused",
           f"{len(ok)}/{len(refused)}")
    assert len(ok) == 5 and len(refused) == 15, Counter(res.status for res, _ in results)
    assert all(res.header("x-propylon-overloaded") == "max_pending_requests"
               for res, _ in refused)
    assert all(t < 0.5 * SLOW for _, t in refused)
    assert sorted(round(t) for _, t in ok) == [1, 1, 2, 2, 3]  # two at a time
    assert ups["pend"].connections == 2
    assert events(gw, "default/pend", "circuit_breaker_overflow") == 15
