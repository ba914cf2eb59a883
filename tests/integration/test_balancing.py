"""Load balancing over the wire: round robin, weights, ring hash, canary backends."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway
from tests.support.upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def ups(module_upstreams) -> tuple[ScriptedUpstream, ScriptedUpstream]:
    return module_upstreams("one"), module_upstreams("two")


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    one, two = ups
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("rr", hostnames=["rr.test"], rules=[r.rule(forward=r.forward("rr"))]),
        r.route("weighted", hostnames=["w.test"], rules=[r.rule(forward=r.forward("weighted"))]),
        r.route("hash", hostnames=["hash.test"], rules=[r.rule(forward=r.forward("hash"))]),
        r.route("canary", hostnames=["canary.test"], rules=[
            r.rule(forward=r.forward(("stable", 90), ("canary", 10))),
        ]),
        r.upstream("rr", one.port, two.port, loadBalancer={"policy": "round_robin"}),
        r.upstream("weighted", (one.port, 3), (two.port, 1)),
        r.upstream("hash", one.port, two.port,
                   loadBalancer={"policy": "ring_hash", "hashOn": {"header": "x-user"}}),
        r.upstream("stable", one.port),
        r.upstream("canary", two.port),
    ))


def served_by(gw: Gateway, host: str, count: int, headers=None) -> list[str]:
    """The x-upstream of ``count`` responses, sent on one keep-alive connection."""
    names = []
    with RawClient(gw.port) as client:
        for _ in range(count):
            client.request("GET", "/lb", headers, host=host)
            response = client.read_final()
            assert response.status == 200, response
            names.append(response.header("x-upstream") or "")
    return names


def test_round_robin_alternates(gw) -> None:
    names = served_by(gw, "rr.test", 20)
    assert all(a != b for a, b in itertools.pairwise(names)), names
    assert Counter(names) == {"one": 10, "two": 10}


def test_endpoint_weights_are_respected(gw) -> None:
    counts = Counter(served_by(gw, "w.test", 400))
    assert 280 <= counts["one"] <= 320, counts
    assert counts["one"] + counts["two"] == 400


def test_ring_hash_sends_a_key_to_one_endpoint(gw) -> None:
    chosen: dict[str, set[str]] = {}
    for user in range(16):
        names = served_by(gw, "hash.test", 5, {"x-user": f"user-{user}"})
        chosen[f"user-{user}"] = set(names)
    assert all(len(endpoints) == 1 for endpoints in chosen.values()), chosen
    assert set().union(*chosen.values()) == {"one", "two"}, "every key went to one endpoint"


def test_canary_weights(gw) -> None:
    counts = Counter(served_by(gw, "canary.test", 500))
    share = counts["two"] / 500
    assert 0.05 <= share <= 0.15, counts
