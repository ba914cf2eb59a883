"""A rolled-back rollout seen from the outside, then across control-plane restarts, with a
real control plane (SQLite store) and three real proxies, as the QA sweep ran it
(steps [34, 100], maxErrorRatio 0.1, minRequests 20).

The module's tests share one fleet and run in order: the fixture rolls a breaking change
back; the metrics and the dashboard must then say the fleet is current on the stable
version; a restart must keep serving the stable version (to the proxies there and to a new
one); a rollout under way at a restart goes on where it was.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.controlplane.conftest import Cluster, ControlPlane
from tests.integration.controlplane.helpers import free_port, gateway, http, wait_until
from tests.integration.controlplane.test_rollout import (
    KEY,
    Traffic,
    _cli,
    _fleet,
    _on,
    _rollout,
    _route,
    _setup,
    _start_proxy,
    _wait_for_phase,
)
from tests.integration.controlplane.test_ui import call, login

PROXIES = 3
ROLLOUT = {"steps": [34, 100], "interval": "6s", "maxErrorRatio": 0.1, "minRequests": 20}


class RolledBack:
    def __init__(self, cluster: Cluster, plane: ControlPlane, port: int, ids: list[str],
                 good: str, bad: str, control_port: int) -> None:
        self.cluster, self.plane, self.port, self.ids = cluster, plane, port, ids
        self.good, self.bad, self.control_port = good, bad, control_port


@pytest.fixture(scope="module")
def rolled_back(module_cluster: Cluster) -> RolledBack:
    cluster = module_cluster
    control_port = free_port()
    plane, port, ids = _setup(cluster, PROXIES, ROLLOUT, control_port)
    good = _fleet(plane.get("/v1/status")[1])["version"]
    with Traffic(port):
        plane.must_put(_route(broken=True))
        rollout = _wait_for_phase(plane, "RolledBack")
        wait_until(lambda: _on(plane, good) == set(ids), timeout=15,
                   what="every proxy back on the good version")
    assert rollout["stable"] == good and "exceeds" in rollout["reason"]
    return RolledBack(cluster, plane, port, ids, good, rollout["candidate"], control_port)


def _metrics(plane: ControlPlane) -> list[Any]:
    status, text = http("GET", plane.url + "/metrics")
    assert status == 200, text
    return [s for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("gateway") == KEY]


def _gauge(samples: list[Any], name: str) -> float | None:
    return next((s.value for s in samples if s.name == name), None)


def test_metrics_after_a_rollback_say_the_fleet_is_current_on_the_stable_version(
        rolled_back: RolledBack) -> None:
    """propylon_control_gateway_version_info named the rolled-back candidate and
    proxies_current was 0 with every proxy on the stable version (PropylonFleetBehind
    fired for ever)."""
    fleet = rolled_back
    samples = _metrics(fleet.plane)
    info = {s.labels["version"]: s.value for s in samples
            if s.name == "propylon_control_gateway_version_info"}
    assert info == {fleet.good: 1.0}, (info, fleet.good, fleet.bad)
    assert _gauge(samples, "propylon_control_proxies_connected") == PROXIES
    assert _gauge(samples, "propylon_control_proxies_current") == PROXIES
    # the alert's expression: connected - current > 0
    assert _gauge(samples, "propylon_control_proxies_connected") \
        - _gauge(samples, "propylon_control_proxies_current") == 0  # type: ignore[operator]


def test_dashboard_says_given_as_status_does_after_a_rollback(
        rolled_back: RolledBack) -> None:
    """The dashboard said "RolledBack, step 1/2 (34%), 1/3 proxies on <candidate>" while
    listing every proxy on the stable version."""
    fleet = rolled_back
    rollout = _rollout(fleet.plane)
    cookie = login(fleet.plane)
    status, _, body = call(fleet.plane, "GET", "/ui/live.json", headers={"cookie": cookie})
    assert status == 200
    import json

    live = json.loads(body)["gateways"][KEY]
    text = live["rollout"]
    expected = f"RolledBack, step 1/2 (34%), {len(rollout['given'])}/{PROXIES} proxies given"
    assert text == expected, text
    assert f"on {fleet.bad}" not in text
    assert {p["version"] for p in live["proxies"].values()} == {fleet.good}
    cli = _cli(fleet.plane, "status")
    assert cli.returncode == 0, cli.stderr
    assert text in cli.stdout, cli.stdout  # the CLI's line says the same
    # and the version it wants the fleet on is the stable one, not the rolled-back candidate
    assert f"{KEY}  desired version {fleet.good}" in cli.stdout, cli.stdout
    _, _, page = call(fleet.plane, "GET", "/ui/", headers={"cookie": cookie})
    assert text in page


def _restart(fleet: RolledBack) -> ControlPlane:
    fleet.cluster.procs.stop("control")
    fleet.cluster.planes.remove(fleet.plane)
    fleet.plane = fleet.cluster.control(port=fleet.control_port, extra=("--log-level", "info"))
    wait_until(lambda: http("GET", fleet.plane.url + "/healthz")[1] == {"status": "ok"},
               what="the restarted control plane to be ready")
    return fleet.plane


def _reconnected(plane: ControlPlane, ids: list[str], since: float) -> bool:
    proxies = _fleet(plane.get("/v1/status")[1])["proxies"]
    return {p["id"] for p in proxies if float(p.get("lastSeen", 0)) > since} >= set(ids)


def test_a_restart_after_a_rollback_keeps_serving_the_stable_version(
        rolled_back: RolledBack) -> None:
    """Restarting the control plane after RolledBack gave every proxy the bad candidate."""
    fleet = rolled_back
    before = _rollout(fleet.plane)
    stopped = time.time()
    plane = _restart(fleet)
    wait_until(lambda: _reconnected(plane, fleet.ids, stopped), timeout=20,
               what="every proxy polling the restarted control plane")
    deadline = time.monotonic() + 6  # the long-polls of three proxies: given at once if at all
    while time.monotonic() < deadline:
        running = {p["id"]: p.get("version")
                   for p in _fleet(plane.get("/v1/status")[1])["proxies"]}
        assert fleet.bad not in running.values(), running
        time.sleep(0.2)
    assert _on(plane, fleet.good) == set(fleet.ids)
    after = _rollout(plane)
    assert (after["phase"], after["stable"], after["candidate"]) == (
        "RolledBack", fleet.good, fleet.bad), after
    assert after["reason"] == before["reason"] and after["given"] == before["given"]
    assert _fleet(plane.get("/v1/status")[1])["version"] == fleet.bad  # still translated
    # a proxy that never ran anything gets the stable version, kept in the store
    new = _start_proxy(fleet.cluster, plane, PROXIES)
    wait_until(lambda: new in _on(plane, fleet.good), timeout=30,
               what="a new proxy on the stable version")
    assert new not in _on(plane, fleet.bad)
    fleet.ids.append(new)
    samples = _metrics(plane)
    assert _gauge(samples, "propylon_control_proxies_current") == len(fleet.ids)


def test_a_rollout_under_way_at_a_restart_goes_on_where_it_was(
        rolled_back: RolledBack) -> None:
    """No traffic: the new rollout holds at its first step (minRequests). Restarted, the
    control plane keeps the same proxy on the candidate and the others on the stable
    version, restarts the step's interval, and an abort still sends every proxy back."""
    fleet = rolled_back
    plane = fleet.plane
    plane.must_put(_route(tag="restart"))
    wait_until(lambda: _rollout(plane).get("reason", "").startswith("waiting"), timeout=30,
               what="the rollout to wait for requests")
    rollout = _rollout(plane)
    assert rollout["stable"] == fleet.good and rollout["phase"] == "Progressing"
    candidate, given = rollout["candidate"], set(rollout["given"])
    assert len(given) == 2  # 34 % of 4 proxies
    wait_until(lambda: _on(plane, candidate) == given, what="the proxies given it")
    samples = _metrics(plane)  # current: on the version they were given
    assert _gauge(samples, "propylon_control_proxies_current") == len(fleet.ids)
    assert {s.labels["version"] for s in samples
            if s.name == "propylon_control_gateway_version_info"} == {fleet.good}

    stopped = time.time()
    plane = _restart(fleet)
    wait_until(lambda: _reconnected(plane, fleet.ids, stopped), timeout=20,
               what="every proxy polling the restarted control plane")
    time.sleep(2)  # long-polls answered by now if they were to change
    after = _rollout(plane)
    assert (after["phase"], after["stable"], after["candidate"], set(after["given"])) == (
        "Progressing", fleet.good, candidate, given), after
    assert after["timeline"][-1]["event"] == "restarted"
    assert after["stepStartedAt"] > stopped
    assert _on(plane, candidate) == given
    # the others report the stable version (a loaded machine may take a poll longer for a
    # proxy's record to say connected again), and none of them was given the candidate
    wait_until(lambda: _on(plane, fleet.good) == set(fleet.ids) - given, timeout=20,
               what="the proxies not given the candidate on the stable version")
    assert _on(plane, candidate) == given
    aborted = _cli(plane, "rollout", "abort", KEY)
    assert aborted.returncode == 0, aborted.stderr
    wait_until(lambda: _on(plane, fleet.good) == set(fleet.ids), timeout=20,
               what="every proxy back on the stable version")


def test_a_proxy_of_an_unknown_gateway_is_shown_while_connected_then_dropped(
        cluster: Cluster) -> None:
    """A proxy started with --gateway fleet/nonexistent left a permanent "fleet/nonexistent
    desired version -" fleet in /v1/status and `propylon status`."""
    import sqlite3

    plane = cluster.control()
    plane.must_put(gateway("edge", "infra", free_port(), ["shop"]))
    wait_until(lambda: _fleet(plane.get("/v1/status")[1])["version"], what="the Gateway")
    cluster.proxy("lost", plane, "fleet/nonexistent")

    def unknown() -> dict[str, Any] | None:
        return next((g for g in plane.get("/v1/status")[1]["gateways"]
                     if g["gateway"] == "fleet/nonexistent"), None)

    entry = wait_until(unknown, what="the misconfigured proxy to be shown")
    assert entry["version"] is None and entry["note"].startswith("unknown Gateway"), entry
    assert [p["connected"] for p in entry["proxies"]] == [True]
    cookie = login(plane)
    assert "unknown Gateway: no Gateway fleet/nonexistent" in call(
        plane, "GET", "/ui/", headers={"cookie": cookie})[2]
    shown = _cli(plane, "status")
    assert "unknown Gateway: no Gateway fleet/nonexistent" in shown.stdout, shown.stdout
    cluster.procs.stop("lost")
    time.sleep(1)  # its last poll's record written
    # a minute later, as far as the records say (CONNECTED_FOR is 50 s)
    with sqlite3.connect(cluster.tmp / "control.db") as db:
        db.execute("UPDATE fleet SET record = json_set(record, '$.lastSeen', "
                   "json_extract(record, '$.lastSeen') - 60) WHERE gateway = ?",
                   ("fleet/nonexistent",))
    assert unknown() is None
    assert [g["gateway"] for g in plane.get("/v1/status")[1]["gateways"]] == [KEY]
    status = _cli(plane, "status")
    assert "fleet/nonexistent" not in status.stdout, status.stdout
