"""Distribution to real proxies: sharding per Gateway, statuses and fleets, invalid-route
isolation, control-plane outages under load, and restarts from the disk cache."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

from tests.integration.controlplane.conftest import Cluster, ControlPlane
from tests.integration.controlplane.helpers import (
    free_port,
    gateway,
    http,
    route,
    served_by,
    upstream,
    wait_until,
)
from tests.support.processes import SUCCESSOR_SERVES, stop_pid


def _fleet(plane: ControlPlane, key: str) -> dict[str, Any]:
    """The Gateway's fleet in /v1/status; an empty one until the Gateway shows there (a
    bare StopIteration escaped the polling helpers and made these tests flaky)."""
    body = plane.get("/v1/status")[1]
    return next((g for g in body["gateways"] if g["gateway"] == key),
                {"gateway": key, "proxies": [], "version": None})


def _all_acked(plane: ControlPlane, key: str, count: int = 1) -> bool:
    fleet = _fleet(plane, key)
    return len(fleet["proxies"]) >= count and all(
        p["connected"] and p.get("version") == fleet["version"] for p in fleet["proxies"])


def _acked_after(plane: ControlPlane, key: str, before: str) -> str | None:
    """The Gateway's version once it is not ``before`` and every proxy ACKed it (read in one
    answer: the version can change between two)."""
    fleet = _fleet(plane, key)
    done = fleet["version"] != before and fleet["proxies"] and all(
        p["connected"] and p.get("version") == fleet["version"] for p in fleet["proxies"])
    return fleet["version"] if done else None


def test_two_gateways_each_get_only_their_routes(cluster: Cluster) -> None:
    plane = cluster.control()
    port_a, port_b = cluster.echo("svc-a"), cluster.echo("svc-b")
    gw1, gw2 = free_port(), free_port()
    for resource in [
        gateway("one", "infra", gw1, ["team-a", "team-c"]),
        gateway("two", "infra", gw2, ["team-b"]),
        upstream("svc", "team-a", port_a), route("ra", "team-a", "/a", "svc"),
        upstream("svc", "team-b", port_b), route("rb", "team-b", "/b", "svc"),
        # team-c delegates /c to its RouteTable, which names an Upstream that does not exist
        {"apiVersion": "propylon.dev/v1", "kind": "Route",
         "metadata": {"name": "rc", "namespace": "team-c"},
         "spec": {"rules": [{"matches": [{"path": {"prefix": "/c"}}],
                             "delegate": {"selector": {"namespaces": ["team-c"]}}}]}},
        {"apiVersion": "propylon.dev/v1", "kind": "RouteTable",
         "metadata": {"name": "tc", "namespace": "team-c"},
         "spec": {"rules": [{"matches": [{"path": {"prefix": "/c/x"}}],
                             "forward": {"backends": [{"upstream": "nowhere"}]}}]}},
    ]:
        plane.must_put(resource)
    admin1 = cluster.proxy("proxy-one", plane, "infra/one")
    cluster.proxy("proxy-two", plane, "infra/two")

    assert wait_until(lambda: served_by(gw1, "/a") == (200, "svc-a"), what="one serves /a")
    assert wait_until(lambda: served_by(gw2, "/b") == (200, "svc-b"), what="two serves /b")
    assert served_by(gw1, "/b")[0] == 404
    assert served_by(gw2, "/a")[0] == 404
    assert served_by(gw1, "/c/x")[0] == 500  # the invalid RouteTable's matches are replaced
    config = http("GET", f"http://127.0.0.1:{admin1}/config")[1]
    assert [g["key"] for g in config["gateways"]] == ["infra/one"]
    assert {s["key"] for s in config["statuses"]} >= {"team-a/ra", "team-c/tc"}
    assert "team-b/rb" not in {s["key"] for s in config["statuses"]}

    wait_until(lambda: _all_acked(plane, "infra/one") and _all_acked(plane, "infra/two"),
               what="both fleets to ACK")
    statuses = {(r["kind"], r["name"]): r for r in plane.get("/v1/status")[1]["resources"]}
    assert statuses[("RouteTable", "tc")]["state"] == "Invalid"
    assert statuses[("Route", "ra")]["state"] == "Accepted"
    assert statuses[("Route", "rb")]["gateways"] == ["infra/two"]


def _gateway_config(plane: ControlPlane, gw: int, echo: int) -> None:
    for resource in [gateway("edge", "infra", gw, ["shop"]), upstream("svc", "shop", echo),
                     route("main", "shop", "/", "svc")]:
        plane.must_put(resource)


class Traffic(threading.Thread):
    """Sends requests one after another until stopped; counts answers other than 200."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.sent, self.failed = port, 0, []  # type: ignore[var-annotated]
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                status, _ = served_by(self.port, "/")
            except OSError as exc:
                status = repr(exc)  # type: ignore[assignment]
            self.sent += 1
            if status != 200:
                self.failed.append(status)


def test_control_plane_outage_then_restart_from_cache(cluster: Cluster) -> None:
    port = free_port()
    plane = cluster.control(port=port)
    gw, echo = free_port(), cluster.echo("svc")
    _gateway_config(plane, gw, echo)
    cluster.proxy("proxy", plane, "infra/edge")
    wait_until(lambda: served_by(gw, "/")[0] == 200, what="the proxy to serve")

    traffic = Traffic(gw)
    traffic.start()
    try:
        cluster.procs.stop("control", kill=True)
        wait_until(lambda: traffic.sent > 200, what="requests during the outage")
        plane = cluster.control(port=port)  # same port, same SQLite file
        plane.must_put(route("extra", "shop", "/extra", "svc"))
        wait_until(lambda: served_by(gw, "/extra/1") == (200, "svc"), timeout=20,
                   what="the proxy to catch up after the restart")
    finally:
        traffic.halt.set()
        traffic.join(10)
    assert traffic.failed == [] and traffic.sent > 200

    # the control plane goes away for good; a restarted proxy serves from its disk cache
    cluster.procs.stop("control", kill=True)
    cluster.procs.stop("proxy")
    assert wait_until(lambda: _refused(gw), what="the proxy to stop")
    cluster.proxy("proxy-again", plane, "infra/edge")
    assert wait_until(lambda: served_by(gw, "/extra/1") == (200, "svc"),
                      what="the restarted proxy to serve from its cache")


def test_a_proxy_stopped_right_after_an_ack_has_that_version_in_its_cache(
        cluster: Cluster) -> None:
    """The cache is written after the report, once changes pause for a second
    (``ir_cache.LatestSave``); what waits is written when the proxy stops."""
    plane = cluster.control()
    gw, echo = free_port(), cluster.echo("svc")
    _gateway_config(plane, gw, echo)
    cluster.proxy("proxy", plane, "infra/edge")
    cached = cluster.tmp / "cache" / "infra__edge.json"
    assert wait_until(cached.exists, what="the first version cached")
    first = json.loads(cached.read_text())["version"]
    plane.must_put(route("extra", "shop", "/extra", "svc"))
    version = wait_until(lambda: _acked_after(plane, "infra/edge", first), interval=0.01,
                         what="the change reported")
    still = json.loads(cached.read_text())["version"]
    cluster.procs.stop("proxy")
    assert json.loads(cached.read_text())["version"] == version
    assert still in (first, version)  # first: written at stop (unless this test was slow)


def test_a_proxy_upgraded_right_after_a_change_serves_it_with_no_control_plane(
        cluster: Cluster) -> None:
    """A connected proxy's binary upgrade (SIGUSR2) with the control plane gone: the new
    process starts from the cache, which holds the change reported just before (what waits
    to be cached is written before the new process starts; that process also takes longer
    to start than the cache's delay, so this passes without that too)."""
    plane = cluster.control()
    gw, echo = free_port(), cluster.echo("svc")
    _gateway_config(plane, gw, echo)
    cluster.proxy("proxy", plane, "infra/edge", log_level="info")
    cached = cluster.tmp / "cache" / "infra__edge.json"
    assert wait_until(cached.exists, what="the first version cached")
    first = json.loads(cached.read_text())["version"]
    plane.must_put(route("extra", "shop", "/extra", "svc"))
    wait_until(lambda: _acked_after(plane, "infra/edge", first), interval=0.01,
               what="the change reported")
    cluster.procs.stop("control", kill=True)
    old = cluster.procs.running["proxy"]
    old.send_signal(signal.SIGUSR2)
    found = wait_until(lambda: SUCCESSOR_SERVES.search(cluster.procs.log("proxy")), timeout=30,
                       what="the new process serving")
    assert found is not None
    successor = int(found.group(1))
    try:
        old.wait(30)
        assert served_by(gw, "/extra/1") == (200, "svc")
    finally:
        stop_pid(successor)


def _refused(port: int) -> bool:
    try:
        served_by(port, "/")
    except OSError:
        return True
    return False


def test_a_refused_ir_is_reported_as_nack(cluster: Cluster) -> None:
    plane = cluster.control()
    echo = cluster.echo("svc")
    taken = echo  # the echo server holds this port, so the proxy cannot listen on it
    _gateway_config(plane, taken, echo)
    admin = cluster.proxy("proxy", plane, "infra/edge")

    def nacked() -> dict[str, Any] | None:
        proxies = _fleet(plane, "infra/edge")["proxies"]
        return proxies[0] if proxies and proxies[0].get("state") == "NACK" else None

    proxy = wait_until(nacked, timeout=20, what="a NACK")
    assert proxy["lastError"] and proxy.get("version", "") == ""
    # the proxy's own admin says so too, as a standalone gateway's does for a refused reload
    stats = wait_until(lambda: (got := _admin_json(admin, "/stats"))["reloads"]["failed"]
                       and got, what="the refusal counted in /stats")
    assert "address already in use" in stats["reloads"]["last_error"].lower(), stats
    metrics = _admin_text(admin, "/metrics")
    assert 'propylon_config_reloads_total{result="failure"}' in metrics
    assert "propylon_config_last_reload_successful 0" in metrics
    good = free_port()
    plane.must_put(gateway("edge", "infra", good, ["shop"]))
    # an Invalid Route in the version the proxy installs is one of its warnings
    plane.must_put(route("broken", "shop", "/broken", "nowhere"))
    assert wait_until(lambda: served_by(good, "/") == (200, "svc"), what="the fixed Gateway")
    wait_until(lambda: _all_acked(plane, "infra/edge"), what="an ACK")
    assert _fleet(plane, "infra/edge")["proxies"][0]["lastError"]  # the last NACK stays shown
    stats = wait_until(lambda: (got := _admin_json(admin, "/stats"))["warnings"] and got,
                       what="the invalid Route in /stats")
    assert stats["reloads"]["succeeded"] >= 1
    assert any("Route shop/broken" in w and "nowhere" in w for w in stats["warnings"]), stats
    assert "propylon_config_last_reload_successful 1" in _admin_text(admin, "/metrics")


def _admin_text(port: int, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return str(answer.read().decode())


def _admin_json(port: int, path: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(_admin_text(port, path))
    return found


def test_connected_proxies_report_endpoint_health(cluster: Cluster) -> None:
    """Issue 5 §9: the health a proxy sees reaches `propylon status` through the control plane."""
    plane = cluster.control()
    alive = cluster.echo("svc-h")
    dead = free_port()  # nothing listens there
    port = free_port()
    checked = upstream("svc", "team-h", alive)
    checked["spec"]["endpoints"].append({"address": "127.0.0.1", "port": dead})
    checked["spec"]["healthCheck"] = {
        "active": {"type": "tcp", "interval": "200ms", "timeout": "100ms",
                   "unhealthyThreshold": 1},
    }
    for resource in [gateway("health", "infra", port, ["team-h"]), checked,
                     route("rh", "team-h", "/h", "svc")]:
        plane.must_put(resource)
    cluster.proxy("proxy-health", plane, "infra/health", health_interval=0.5)  # 5 s by default

    expected = {f"127.0.0.1:{alive}": True, f"127.0.0.1:{dead}": False}

    def reported() -> dict[str, Any] | None:
        # A report can leave before the first check of the dead endpoint has failed (endpoints
        # start healthy, as Envoy's do without a check yet): wait for the verdicts to settle.
        proxies = _fleet(plane, "infra/health")["proxies"]
        health = proxies[0].get("health") if proxies else None
        if not health or len(health["endpoints"]) != 2:
            return None
        verdicts = {ep["endpoint"]: ep["healthy"] for ep in health["endpoints"]}
        return health if verdicts == expected else None

    health = wait_until(reported, timeout=20.0, what="a health report judging both endpoints")
    verdicts = {ep["endpoint"]: ep["healthy"] for ep in health["endpoints"]}
    assert verdicts == expected

    from propylon.controlplane.diffview import render_health

    lines = "\n".join(render_health(health))
    assert f"127.0.0.1:{dead}: UNHEALTHY" in lines and f"127.0.0.1:{alive}: healthy" in lines
