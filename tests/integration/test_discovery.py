"""DNS discovery and failover against real servers: a gateway process, dnsmasq on a loopback
port, upstreams on loopback addresses (127.0.0.2, ...), traffic flowing while answers change.

Failover is tested twice: the spillover arithmetic with two groups of upstreams on loopback
addresses (health checks told to fail), and across two "clusters" that are network namespaces
reached over veth pairs from the host, where the gateway runs: traffic moves to the second
cluster when the first one's link goes down or its servers die, and comes back.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import GatewayFactory
from tests.support.dns import BoundUpstream, Dnsmasq, free_port_on
from tests.support.e2e import Procs
from tests.support.gateway import metric_value
from tests.support.h1 import Response
from tests.support.load import LoadClient
from tests.support.net import poll_until
from tests.support.netns import _ip, destroy_names
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


# -- two clusters in network namespaces -------------------------------------------------------
CLUSTER_SUBNET = "10.231.8"  # east 10.231.8.0/29, west 10.231.8.8/29 (host side .1 and .9)


@dataclass
class Cluster:
    """A network namespace with two server addresses, linked to the host by a veth pair whose
    host end is ``link`` (``ip link set LINK down`` cuts the cluster off)."""

    name: str
    ns: str
    link: str
    addresses: tuple[str, str]


def _make_cluster(name: str, index: int) -> Cluster:
    tag = f"{name[0]}{os.getpid() % 100000}"
    base = 8 * index
    cluster = Cluster(name, f"pf{tag}", f"pf{tag}h",
                      (f"{CLUSTER_SUBNET}.{base + 2}", f"{CLUSTER_SUBNET}.{base + 3}"))
    _ip("netns", "add", cluster.ns)
    try:
        _ip("link", "set", "lo", "up", ns=cluster.ns)
        _ip("link", "add", cluster.link, "type", "veth", "peer", "name", "c0", "netns", cluster.ns)
        _ip("addr", "add", f"{CLUSTER_SUBNET}.{base + 1}/29", "dev", cluster.link)
        _ip("link", "set", cluster.link, "up")
        for address in cluster.addresses:
            _ip("addr", "add", f"{address}/29", "dev", "c0", ns=cluster.ns)
        _ip("link", "set", "c0", "up", ns=cluster.ns)
    except BaseException:
        destroy_names([cluster.ns])  # the veth pair goes with it
        raise
    return cluster


@pytest.fixture
def clusters() -> Iterator[tuple[Cluster, Cluster]]:
    if shutil.which("ip") is None:
        pytest.skip("network namespaces: no `ip` (iproute2) on this machine")
    if os.geteuid() != 0:
        pytest.skip("network namespaces: creating them needs root")
    made: list[Cluster] = []
    try:
        for index, name in enumerate(("east", "west")):
            made.append(_make_cluster(name, index))
    except (OSError, subprocess.SubprocessError) as exc:
        destroy_names([cluster.ns for cluster in made])
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"network namespaces cannot be created here: {exc!r} {detail!r}")
    try:
        yield made[0], made[1]
    finally:
        destroy_names([cluster.ns for cluster in made])


class ServiceLoad(LoadClient):
    """LoadClient counting by ``x-service`` (the echo server's name header), not x-upstream."""

    def _count(self, response: Response | None, error: str) -> None:
        if response is not None and response.status < 500:
            with self.lock:
                self.result.total += 1
                self.result.statuses[response.status] += 1
                self.result.served_by[response.header("x-service") or ""] += 1
            return
        super()._count(response, error)


def _start_servers(procs: Procs, cluster: Cluster, port: int) -> None:
    for i, address in enumerate(cluster.addresses):
        procs.python(f"{cluster.name}{i}", "propylon.demo.echo_server", "--host", address,
                     "--port", str(port), "--name", f"{cluster.name}{i}", ns=cluster.ns)
    for address in cluster.addresses:
        poll_until(lambda address=address: _accepts(address, port), 10,
                   message=f"{cluster.name} server {address} listening")


def _accepts(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_failover_between_clusters_in_network_namespaces(gateways: GatewayFactory, clusters,
                                                         tmp_path: Path) -> None:
    east, west = clusters
    port = 8080  # each cluster's servers listen on their own addresses: no clash with the host
    procs = Procs(tmp_path)
    try:
        _start_servers(procs, east, port)
        _start_servers(procs, west, port)
        endpoints = ", ".join(f"{{address: {a}, port: {port}}}" for a in east.addresses)
        failover = ", ".join(f"{{address: {a}, port: {port}}}" for a in west.addresses)
        gateway = gateways(_config(f"""
  endpoints: [{endpoints}]
  failover:
    - endpoints: [{failover}]
  connectTimeout: 1s
  healthCheck:
    active: {{interval: 200ms, intervalJitter: 10ms, timeout: 500ms,
              healthyThreshold: 1, unhealthyThreshold: 1}}
""", extra_rule=", timeout: 2s, retries: {attempts: 2, on: [connect-failure]}"))
        load = ServiceLoad(gateway.port, HOST, duration=20.0)
        load.start()
        try:
            _run_failover_scenario(load, procs, east, port)
        finally:
            load.stop()
            load.join(10)
    finally:
        procs.stop_all()
    result = load.result
    print(f"\n[failover across namespaces] {result.total} requests, {result.errors} failed "
          f"({dict(result.error_kinds)}), served by {dict(result.served_by)}")
    assert result.errors <= 20, result.error_kinds  # a few per cut, while health checks see it


def _run_failover_scenario(load: ServiceLoad, procs: Procs, east: Cluster, port: int) -> None:
    def cluster_of_recent(seconds: float = 0.4) -> set[str]:
        before = _served(load)
        time.sleep(seconds)
        after = _served(load)
        return {name[:4] for name, n in after.items() if n > before.get(name, 0)}

    poll_until(lambda: cluster_of_recent() == {"east"}, 10, message="traffic on east")
    _ip("link", "set", east.link, "down")  # east is cut off from the gateway's host
    poll_until(lambda: cluster_of_recent() == {"west"}, 10, message="traffic moved to west")
    _ip("link", "set", east.link, "up")
    poll_until(lambda: cluster_of_recent() == {"east"}, 10, message="traffic back on east")
    for i in range(2):  # east's servers die (SIGTERM, by PID)
        procs.stop(f"east{i}")
    poll_until(lambda: cluster_of_recent() == {"west"}, 10, message="west after east died")
    _start_servers(procs, east, port)
    poll_until(lambda: cluster_of_recent() == {"east"}, 10, message="east serves again")
