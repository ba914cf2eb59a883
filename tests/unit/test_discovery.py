"""Upstream discovery and failover without sockets: the spillover arithmetic, the expansion
of DNS answers into endpoints, the failover balancer, and the validation of the fields."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from pydantic import ValidationError

from propylon import ir
from propylon.config.upstream import UpstreamSpec
from propylon.runtime.balancer import PriorityBalancer, make_balancer
from propylon.runtime.compile import Services, compile_cluster, refresh_cluster
from propylon.runtime.discovery import DnsQuery, Record, endpoint_groups, queries
from propylon.runtime.priority import group_health, priority_loads


@pytest.mark.parametrize(("usable", "totals", "threshold", "loads", "panic"), [
    pytest.param([4, 4], [4, 4], 70, [1000, 0], False, id="all-healthy"),
    pytest.param([3, 4], [4, 4], 70, [1000, 0], False, id="75pct-still-whole"),
    pytest.param([2, 4], [4, 4], 70, [714, 286], False, id="half-spills-in-proportion"),
    pytest.param([1, 4], [4, 4], 70, [357, 643], False, id="quarter"),
    pytest.param([0, 4], [4, 4], 70, [0, 1000], False, id="group-0-down"),
    pytest.param([2, 2, 4], [4, 4, 4], 70, [714, 286, 0], False, id="group-1-covers-the-rest"),
    pytest.param([1, 1, 4], [4, 4, 4], 70, [357, 357, 286], False, id="spill-to-group-2"),
    pytest.param([2, 0], [4, 4], 70, [1000, 0], False, id="normalised-when-short"),
    pytest.param([1, 1], [4, 4], 70, [500, 500], False, id="normalised-both-short"),
    pytest.param([1, 0], [4, 4], 70, [1000, 0], True, id="panic-under-threshold"),
    pytest.param([0, 0], [4, 4], 70, [1000, 0], True, id="nothing-usable-first-group"),
    pytest.param([0, 0], [0, 3], 70, [0, 1000], True, id="first-group-empty"),
    pytest.param([1, 4], [4, 4], 0, [1000, 0], False, id="threshold-0-any-usable"),
    pytest.param([3, 4], [4, 4], 100, [750, 250], False, id="threshold-100-exact-share"),
    pytest.param([0, 2], [0, 2], 70, [0, 1000], False, id="unresolved-group-0"),
])
def test_priority_loads(usable: list[int], totals: list[int], threshold: float,
                        loads: list[int], panic: bool) -> None:
    assert priority_loads(usable, totals, threshold, 50.0) == (loads, panic)


def test_loads_always_add_up_to_1000() -> None:
    for a in range(8):
        for b in range(8):
            got, _ = priority_loads([a, b, 3], [7, 7, 3], 70.0, 50.0)
            assert sum(got) == 1000 and min(got) >= 0


def test_group_health_envoy_example() -> None:
    # Envoy: 50 % healthy at overprovisioning 1.4 takes 70 % of the traffic
    assert group_health(50, 100, 100 / 1.4) == pytest.approx(0.7)
    assert group_health(0, 0, 70) == 0.0


class _Ep:
    def __init__(self, name: str, weight: int = 1) -> None:
        self.key = name
        self.weight = weight
        self.active = 0


def test_priority_balancer_exact_shares_and_sticky_hash() -> None:
    a, b = _Ep("a"), _Ep("b")
    balancer = PriorityBalancer([make_balancer("round_robin", [a]),
                                 make_balancer("round_robin", [b])], [714, 286])
    picks = Counter(balancer.pick(None).key for _ in range(1000))  # type: ignore[union-attr]
    assert picks == {"a": 714, "b": 286}
    first = balancer.pick("user-42")
    assert all(balancer.pick("user-42") is first for _ in range(20))
    with pytest.raises(ValueError, match="positive load"):
        PriorityBalancer([make_balancer("round_robin", [a])], [0])


DNS = ir.DnsIR(refresh=5.0, resolvers=("127.0.0.1:5353",))


def _query(name: str, srv: bool = False) -> DnsQuery:
    return DnsQuery(name, srv, "auto", ("127.0.0.1:5353",), 5.0)


def test_expansion_one_endpoint_per_address_merged_and_named() -> None:
    upstream = ir.UpstreamIR("ns/u", (
        ir.EndpointIR("svc.test", 80, 2), ir.EndpointIR("10.0.0.9", 80, 1),
        ir.EndpointIR("other.test", 80, 3)), dns=DNS)
    assert queries(upstream) == {_query("svc.test"), _query("other.test")}
    answers = {_query("svc.test"): (Record("10.0.0.1"), Record("10.0.0.2")),
               _query("other.test"): (Record("10.0.0.2"),)}  # shared with svc.test
    [group] = endpoint_groups(upstream, answers)
    assert [(e.endpoint.address, e.endpoint.weight, e.name) for e in group] == [
        ("10.0.0.1", 2, "svc.test"), ("10.0.0.2", 5, "svc.test"), ("10.0.0.9", 1, None)]


def test_expansion_srv_and_unanswered_names() -> None:
    upstream = ir.UpstreamIR("ns/u", (), dns=ir.DnsIR(5.0, DNS.resolvers, srv="_h._tcp.s.test"),
                             failover=(ir.EndpointGroupIR((ir.EndpointIR("b.test", 81),),
                                                          DNS),))
    srv = _query("_h._tcp.s.test", srv=True)
    groups = endpoint_groups(upstream, {srv: (Record("10.0.0.1", 8001, 10, "a.test"),)})
    assert [[(e.endpoint.address, e.endpoint.port, e.endpoint.weight, e.name) for e in g]
            for g in groups] == [[("10.0.0.1", 8001, 10, "a.test")], []]


def test_no_dns_no_queries_names_kept_for_the_os() -> None:
    upstream = ir.UpstreamIR("ns/u", (ir.EndpointIR("legacy.example", 80),))
    assert queries(upstream) == frozenset()
    [[found]] = endpoint_groups(upstream, {})
    assert found.endpoint.address == "legacy.example"


def test_cluster_failover_and_dns_refresh_keep_endpoints() -> None:
    loop = asyncio.new_event_loop()
    try:
        services = Services.scratch(loop)
        upstream = ir.UpstreamIR(
            "ns/u", (ir.EndpointIR("svc.test", 80),), dns=DNS,
            failover=(ir.EndpointGroupIR((ir.EndpointIR("10.1.0.1", 80),
                                          ir.EndpointIR("10.1.0.2", 80))),),
            failover_threshold=70.0)
        services.answers[_query("svc.test")] = (Record("10.0.0.1"), Record("10.0.0.2"))
        cluster = compile_cluster("gw", upstream, services)
        assert [len(g) for g in cluster.groups] == [2, 2] and cluster.loads == [1000, 0]
        assert {cluster.balancer.pick(None).label for _ in range(4)} == {
            "10.0.0.1:80", "10.0.0.2:80"}
        kept = cluster.groups[0][1]
        services.answers[_query("svc.test")] = (Record("10.0.0.2"), Record("10.0.0.3"))
        refresh_cluster(cluster, services)
        assert [e.label for e in cluster.groups[0]] == ["10.0.0.2:80", "10.0.0.3:80"]
        assert cluster.groups[0][0] is kept  # the same object: its load count, its pool
        cluster.groups[0][0].health.healthy = False
        cluster.rebalance(0.0)
        assert cluster.loads == [714, 286]
        picks = Counter(cluster.balancer.pick(None).label for _ in range(1000))
        assert picks["10.0.0.3:80"] == 714 and picks["10.0.0.2:80"] == 0
        assert picks["10.1.0.1:80"] + picks["10.1.0.2:80"] == 286
    finally:
        loop.close()


@pytest.mark.parametrize(("spec", "message"), [
    pytest.param({"endpoints": []}, "at least one endpoint", id="no-endpoints"),
    pytest.param({"endpoints": [{"address": "a.test", "port": 80}],
                  "dns": {"srv": "_http._tcp.a.test"}}, "dns.srv gives the endpoints",
                 id="srv-with-endpoints"),
    pytest.param({"dns": {"srv": "http.a.test"}}, "is not an SRV name", id="bad-srv"),
    pytest.param({"endpoints": [{"address": "a.test", "port": 80}],
                  "dns": {"resolvers": ["dns.google"]}}, "is not HOST:PORT", id="resolver-name"),
    pytest.param({"endpoints": [{"address": "a.test", "port": 80}],
                  "dns": {"resolvers": ["10.0.0.1"]}}, "is not HOST:PORT", id="no-port"),
    pytest.param({"endpoints": [{"address": "a.test", "port": 80}],
                  "dns": {"refresh": "250ms"}}, "at least 1s", id="refresh-under-1s"),
    pytest.param({"endpoints": [{"address": "a.test", "port": 80}],
                  "dns": {"refresh": "soon"}}, "invalid duration", id="bad-duration"),
    pytest.param({"endpoints": [{"address": "a_b", "port": 80}], "dns": {}},
                 "neither an IP address nor a host name", id="bad-name"),
    pytest.param({"endpoints": [{"address": "a.test", "port": 80}], "dns": {"family": "v5"}},
                 "'auto', 'v4' or 'v6'", id="bad-family"),
    pytest.param({"endpoints": [{"address": "10.0.0.1", "port": 80}], "failover": [{}]},
                 "failover[0].endpoints needs at least one", id="empty-group"),
    pytest.param({"endpoints": [{"address": "10.0.0.1", "port": 80}],
                  "failoverThreshold": 150}, "less than or equal to 100", id="threshold"),
])
def test_validation_errors(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        UpstreamSpec.model_validate(spec)
    assert message in str(info.value)


def test_valid_shapes() -> None:
    spec = UpstreamSpec.model_validate({
        "endpoints": [{"address": "shop.svc.cluster.local", "port": 8080}],
        "dns": {"refresh": "10s", "resolvers": ["10.96.0.10:53", "[fd00::10]:53"],
                "family": "v4"},
        "failover": [{"endpoints": [{"address": "shop.east.example", "port": 443}]},
                     {"dns": {"srv": "_https._tcp.shop.west.example"}}],
        "failoverThreshold": 80,
    })
    assert spec.dns is not None and spec.dns.resolvers == ["10.96.0.10:53", "[fd00::10]:53"]
    assert [len(g.endpoints) for g in spec.failover] == [1, 0]
