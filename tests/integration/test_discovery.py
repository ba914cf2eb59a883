"""DNS discovery and failover against real servers: a gateway process, dnsmasq on a loopback
port, upstreams on loopback addresses (127.0.0.2, ...), traffic flowing while answers change.

The two "clusters" of the failover test are two groups of upstreams on loopback addresses,
not network namespaces: see docs/reference.md, "Upstream discovery and failover".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import GatewayFactory
from tests.support.dns import BoundUpstream, Dnsmasq, free_port_on
from tests.support.gateway import metric_value
from tests.support.load import LoadClient
from tests.support.net import poll_until
from tests.support.upstream import Reply

HOST = "svc.example.com"


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Callable[..., Dnsmasq]]:
    started: list[Dnsmasq] = []

    def make(hosts: list[tuple[str, str]], **options: object) -> Dnsmasq:
        server = Dnsmasq(tmp_path / f"dns{len(started)}", hosts, **options)  # type: ignore[arg-type]
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def bound() -> Iterator[Callable[[str, str, int], BoundUpstream]]:
    started: list[BoundUpstream] = []

    def make(name: str, host: str, port: int) -> BoundUpstream:
        upstream = BoundUpstream(name, host, port).start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.stop()


def _config(upstream_spec: str, extra_rule: str = "") -> Callable[[int], str]:
    def render(port: int) -> str:
        return f"""
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  listeners: [{{name: web, port: {port}, protocol: HTTP}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: r}}
spec:
  hostnames: [{HOST}]
  rules:
    - forward: {{backends: [{{upstream: svc}}]{extra_rule}}}
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: svc}}
spec:
{upstream_spec}
"""
    return render


def _served(load: LoadClient) -> dict[str, int]:
    with load.lock:
        return dict(load.result.served_by)


def test_records_change_while_traffic_flows(gateways: GatewayFactory, dnsmasq, bound) -> None:
    addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    port = free_port_on(addresses)
    for address in addresses:
        bound(address, address, port)
    dns = dnsmasq([("127.0.0.2", "svc.test"), ("127.0.0.3", "svc.test")])
    gateway = gateways(_config(f"""
  endpoints: [{{address: svc.test, port: {port}}}]
  dns: {{refresh: 30s, resolvers: ["{dns.address}"]}}
"""))
    load = LoadClient(gateway.port, HOST, duration=40.0)
    load.start()
    try:
        poll_until(lambda: {"127.0.0.2", "127.0.0.3"} <= set(_served(load)), 15,
                   message="both first addresses served")
        dns.set_hosts([("127.0.0.3", "svc.test"), ("127.0.0.4", "svc.test")])
        # the TTL (1s) is shorter than refresh (30s): the change is seen within a few seconds
        poll_until(lambda: _served(load).get("127.0.0.4", 0) > 20, 15,
                   message="the new address serves")
        time.sleep(1.0)  # requests that picked .2 before the swap have finished by now
        removed = _served(load).get("127.0.0.2", 0)
        time.sleep(1.0)
        after = _served(load)
        assert after.get("127.0.0.2", 0) == removed, "the removed address still gets traffic"
        assert after["127.0.0.3"] > 0
    finally:
        load.stop()
        load.join(10)
    assert load.result.errors == 0, load.result.error_kinds
    metrics = gateway.metrics()
    assert metric_value(metrics, "propylon_upstream_dns_addresses", host="svc.test",
                        type="auto") == 2
    assert metric_value(metrics, "propylon_upstream_dns_resolutions_total", host="svc.test",
                        type="auto", result="success") >= 2


def test_failed_resolution_keeps_the_last_addresses(gateways: GatewayFactory, dnsmasq,
                                                     bound) -> None:
    port = free_port_on(["127.0.0.5"])
    bound("127.0.0.5", "127.0.0.5", port)
    dns = dnsmasq([("127.0.0.5", "keep.test")])
    gateway = gateways(_config(f"""
  endpoints: [{{address: keep.test, port: {port}}}]
  dns: {{refresh: 1s, resolvers: ["{dns.address}"], family: v4}}
"""))
    load = LoadClient(gateway.port, HOST, duration=40.0)
    load.start()
    try:
        poll_until(lambda: _served(load).get("127.0.0.5", 0) > 0, 15, message="served")
        dns.set_hosts([])  # NXDOMAIN from now on

        def failures() -> float:
            return metric_value(gateway.metrics(), "propylon_upstream_dns_resolutions_total",
                                host="keep.test", type="v4", result="failure")

        poll_until(lambda: failures() >= 2, 15, interval=0.2, message="failures counted")
        before = _served(load)["127.0.0.5"]
        poll_until(lambda: _served(load)["127.0.0.5"] > before + 20, 15,
                   message="still served from the last addresses")
        dns.set_hosts([("127.0.0.5", "keep.test")])
        poll_until(lambda: "resolves again" in gateway.stderr_text(), 15, interval=0.2,
                   message="recovery logged")
    finally:
        load.stop()
        load.join(10)
    assert load.result.errors == 0, load.result.error_kinds
    log = gateway.stderr_text()
    assert log.count("dns keep.test failed") == 1, log  # once per change of state


def test_srv_records_give_addresses_ports_and_weights(gateways: GatewayFactory, dnsmasq,
                                                      bound) -> None:
    a_port, b_port = free_port_on(["127.0.0.6"]), free_port_on(["127.0.0.7"])
    bound("a", "127.0.0.6", a_port)
    bound("b", "127.0.0.7", b_port)
    dns = dnsmasq([("127.0.0.6", "a.test"), ("127.0.0.7", "b.test")],
                  srv=[f"_http._tcp.svc.test,a.test,{a_port},0,3",
                       f"_http._tcp.svc.test,b.test,{b_port},0,1",
                       f"_http._tcp.svc.test,b.test,{a_port + 1},5,1"])  # lower priority
    gateway = gateways(_config(f"""
  dns: {{srv: _http._tcp.svc.test, resolvers: ["{dns.address}"]}}
"""))
    load = LoadClient(gateway.port, HOST, max_requests=400)
    load.run()
    assert load.result.errors == 0, load.result.error_kinds
    assert load.result.served_by == {"a": 300, "b": 100}


def _failing_health(upstream: BoundUpstream, failing: bool) -> None:
    def handler(request):  # type: ignore[no-untyped-def]
        if request.path == "/healthz" and failing:
            return Reply(503)
        return upstream.echo(request)
    upstream.handler = handler


def test_failover_spills_in_proportion_and_comes_back(gateways: GatewayFactory,
                                                      bound) -> None:
    port = free_port_on(["127.0.0.8", "127.0.0.9", "127.0.0.10", "127.0.0.11"])
    east = [bound(f"east{i}", f"127.0.0.{8 + i}", port) for i in range(2)]
    west = [bound(f"west{i}", f"127.0.0.{10 + i}", port) for i in range(2)]
    for upstream in east + west:
        _failing_health(upstream, False)
    gateway = gateways(_config(f"""
  endpoints: [{{address: 127.0.0.8, port: {port}}}, {{address: 127.0.0.9, port: {port}}}]
  failover:
    - endpoints: [{{address: 127.0.0.10, port: {port}}}, {{address: 127.0.0.11, port: {port}}}]
  failoverThreshold: 70
  healthCheck:
    active: {{interval: 200ms, intervalJitter: 10ms, timeout: 2s,
              healthyThreshold: 1, unhealthyThreshold: 1}}
""", extra_rule=", retries: {attempts: 2, on: [connect-failure]}"))

    def share(seconds: float) -> dict[str, int]:
        load = LoadClient(gateway.port, HOST, duration=seconds)
        load.run()
        assert load.result.errors == 0, load.result.error_kinds
        counts: dict[str, int] = {}
        for name, n in load.result.served_by.items():
            counts[name[:4]] = counts.get(name[:4], 0) + n
        return counts

    assert set(share(0.5)) == {"east"}
    _failing_health(east[0], True)  # half of east healthy: 50/70 of the traffic stays
    poll_until(lambda: "west" in share(0.3), 15, message="traffic spills to west")
    counts = share(1.5)
    east_share = counts.get("east", 0) / sum(counts.values())
    assert 0.6 < east_share < 0.8, counts

    east[0].stop()  # the whole east cluster goes away
    east[1].stop()
    poll_until(lambda: set(share(0.3)) == {"west"}, 15, message="all traffic on west")

    restarted = [upstream.restart() for upstream in east]  # and healthy again
    for upstream in restarted:
        _failing_health(upstream, False)
    try:
        poll_until(lambda: set(share(0.3)) == {"east"}, 15, message="traffic back on east")
    finally:
        for upstream in restarted:
            upstream.stop()
