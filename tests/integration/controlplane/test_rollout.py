"""Progressive rollout with ten real proxies (one worker each) sharing the Gateway's port.

Traffic goes through new connections, so the kernel spreads it over the ten proxies
(SO_REUSEPORT). A watcher polls /v1/status and writes down when each proxy ACKed which
version: the timeline printed at the end of each test. The tests share one fleet (``fleet``):
each starts once every proxy runs the same version, with no rollout active, and leaves it so.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from itertools import pairwise
from typing import Any

import pytest

from tests.integration.controlplane.conftest import Cluster, ControlPlane
from tests.integration.controlplane.helpers import free_port, gateway, upstream, wait_until

PROXIES = 10
INTERVAL = 1  # seconds between steps: asserted as the steps' least spacing
ROLLOUT = {"steps": [10, 50, 100], "interval": f"{INTERVAL}s", "maxErrorRatio": 0.05,
           "minRequests": 20}
KEY = "infra/edge"


def _route(broken: bool = False, tag: str = "1") -> dict[str, Any]:
    flaky: dict[str, Any] = ({"directResponse": {"status": 500, "body": "broken"}} if broken
                             else {"forward": {"backends": [{"upstream": "svc"}]}})
    return {"apiVersion": "propylon.dev/v1", "kind": "Route",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"rules": [
                {"matches": [{"path": {"prefix": "/flaky"}}], **flaky},
                {"matches": [{"path": {"prefix": "/"}}],
                 "forward": {"backends": [{"upstream": "svc"}]},
                 "policies": [{"headers": {"response": {"set": {"x-tag": tag}}}}]},
            ]}}


class Traffic:
    """Threads sending GET / and GET /flaky on new connections until stopped."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            path = "/flaky" if n % 2 else "/"
            n += 1
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", path, headers={"connection": "close"})
                status = conn.getresponse().status
                conn.close()
            except OSError:
                status = 0
            self.statuses[(path, status)] += 1


class Watcher:
    """Polls /v1/status: when each proxy first reported running each version."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.first: dict[tuple[str, str], float] = {}  # (proxy, version) -> time
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.stop.is_set():
            status, body = self.plane.get("/v1/status")
            if status == 200:
                for proxy in _fleet(body)["proxies"]:
                    self.first.setdefault((proxy["id"], proxy.get("version", "")), time.time())
            time.sleep(0.1)

    def ran(self, version: str) -> dict[str, float]:
        return {p: t for (p, v), t in self.first.items() if v == version}


def _fleet(status: dict[str, Any]) -> dict[str, Any]:
    return next((g for g in status["gateways"] if g["gateway"] == KEY),
                {"proxies": [], "version": None, "rollout": None})


def _setup(cluster: Cluster, proxies: int = PROXIES, rollout: dict[str, Any] | None = None,
           control_port: int | None = None) -> tuple[ControlPlane, int, list[str]]:
    """A control plane, the Gateway with ``rollout`` (default ``ROLLOUT``) and ``proxies``
    proxies on its first version."""
    plane = cluster.control(port=control_port, extra=("--log-level", "info"))
    port = free_port()
    plane.must_put(upstream("svc", "shop", cluster.echo("svc")))
    plane.must_put(_route())
    edge = gateway("edge", "infra", port, ["shop"])
    edge["spec"]["rollout"] = rollout or ROLLOUT
    plane.must_put(edge)
    ids = [_start_proxy(cluster, plane, i) for i in range(proxies)]
    version = wait_until(lambda: _fleet(plane.get("/v1/status")[1])["version"],
                         what="the Gateway to be translated")
    wait_until(lambda: _on(plane, version) == set(ids), timeout=60,
               what="the proxies on the first version")
    return plane, port, ids


Fleet = tuple[ControlPlane, int, list[str]]  # the control plane, the Gateway's port, proxy ids


@pytest.fixture(scope="module")
def fleet(module_cluster: Cluster) -> Fleet:
    return _setup(module_cluster)


def _settled(plane: ControlPlane, ids: list[str]) -> str:
    """The version every proxy runs, once no rollout is active."""
    def one_version() -> str | None:
        fleet = _fleet(plane.get("/v1/status")[1])
        if (fleet["rollout"] or {}).get("phase") in ("Progressing", "Paused"):
            return None
        running = {p["id"]: p.get("version") for p in fleet["proxies"] if p["connected"]}
        versions = {running.get(proxy) for proxy in ids}
        return versions.pop() if len(versions) == 1 and None not in versions else None

    version = wait_until(one_version, timeout=30, what="every proxy on one version")
    assert version is not None
    return version


def _start_proxy(cluster: Cluster, plane: ControlPlane, i: int) -> str:
    """Proxy ``i`` of the Gateway, one worker, reporting every 0.3 s; its id."""
    name = f"proxy-{i}"
    cluster.procs.start(name, "propylon", "proxy", "--control", plane.url, "--gateway", KEY,
                        "--token-file", str(cluster.tmp / "token"),
                        "--cache-dir", str(cluster.tmp / f"cache-{i}"),
                        "--admin", f"127.0.0.1:{free_port()}", "--access-log", "off",
                        "--log-level", "warning", "--workers", "1", "--health-interval", "0.3")
    return f"{socket.gethostname()}-{cluster.procs.running[name].pid}"


def _on(plane: ControlPlane, version: str) -> set[str]:
    """Connected proxies whose last ACK is ``version``."""
    fleet = _fleet(plane.get("/v1/status")[1])
    return {p["id"] for p in fleet["proxies"] if p["connected"] and p.get("version") == version}


def _rollout(plane: ControlPlane) -> dict[str, Any]:
    rollout: dict[str, Any] = _fleet(plane.get("/v1/status")[1])["rollout"] or {}
    return rollout


def _wait_for_phase(plane: ControlPlane, phase: str) -> dict[str, Any]:
    rollout = wait_until(lambda: _rollout(plane).get("phase") == phase and _rollout(plane),
                         timeout=60, interval=0.2, what=f"the rollout to be {phase}")
    assert isinstance(rollout, dict)
    return rollout


def _print_timeline(title: str, rollout: dict[str, Any], watcher: Watcher,
                    ids: list[str]) -> None:
    start = rollout["startedAt"]
    print(f"\n{title}: {rollout['stable']} -> {rollout['candidate']}, {rollout['phase']}")
    for event in rollout["timeline"]:
        extra = {k: v for k, v in event.items() if k not in ("at", "event")}
        print(f"  +{event['at'] - start:6.2f}s  {event['event']:<10} {extra}")
    ran = watcher.ran(rollout["candidate"])
    for proxy in ids:
        seen = f"+{ran[proxy] - start:6.2f}s" if proxy in ran else "   never"
        print(f"  {proxy}: ran {rollout['candidate']} {seen}")


def _cli(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROPYLON_CONTROL": plane.url, "PROPYLON_TOKEN": plane.token}
    return subprocess.run([sys.executable, "-m", "propylon", *args], env=env, text=True,
                          capture_output=True, timeout=60)


def test_operator_pauses_resumes_and_aborts_from_the_cli(fleet: Fleet) -> None:
    """No traffic: the rollout holds at its first step (minRequests), where the operator
    acts; status and the API show each phase. First of the module: the fleet has had no
    rollout yet."""
    plane, _, ids = fleet
    stable = _settled(plane, ids)
    assert _cli(plane, "rollout", "pause", KEY).returncode == 1  # no rollout yet

    plane.must_put(_route(tag="cli"))
    rollout = wait_until(lambda: _rollout(plane).get("reason", "").startswith("waiting"),
                         timeout=30, what="the rollout to wait for requests")
    candidate, given = _rollout(plane)["candidate"], set(_rollout(plane)["given"])
    assert len(given) == 1
    wait_until(lambda: _on(plane, candidate) == given, what="the proxy given the candidate")
    paused = _cli(plane, "rollout", "pause", KEY)
    assert paused.returncode == 0, paused.stderr
    assert f"Paused, step 1/3 (10%), 1/{PROXIES} proxies given" in paused.stdout
    status = _cli(plane, "status")
    assert f"rollout {stable} -> {candidate}: Paused" in status.stdout, status.stdout
    assert "5xx ratio new 0.0000 (0/0), old" in status.stdout
    assert _cli(plane, "rollout", "resume", KEY).returncode == 0
    assert _rollout(plane)["phase"] == "Progressing"
    aborted = _cli(plane, "rollout", "abort", KEY)
    assert aborted.returncode == 0 and "Aborted" in aborted.stdout, aborted.stderr
    wait_until(lambda: _on(plane, stable) == set(ids), what="every proxy back on v1")
    again = _cli(plane, "rollout", "abort", KEY)
    assert again.returncode == 1 and "HTTP 409: cannot abort" in again.stderr, again.stderr
    status_code, body = plane.get(f"/v1/gateways/{KEY}/rollout")
    assert status_code == 200 and body["reason"] == "aborted by an operator"
    assert [e["event"] for e in body["timeline"]] == [
        "started", "given", "paused", "resumed", "aborted"], rollout


def test_a_good_change_reaches_every_proxy_in_steps(fleet: Fleet) -> None:
    plane, port, ids = fleet
    _settled(plane, ids)
    with Traffic(port) as traffic, Watcher(plane) as watcher:
        plane.must_put(_route(tag="2"))
        rollout = _wait_for_phase(plane, "Complete")
        wait_until(lambda: _on(plane, rollout["candidate"]) == set(ids), timeout=15,
                   what="every proxy on the new version")
    _print_timeline("good change", rollout, watcher, ids)
    print(f"  traffic: {dict(traffic.statuses)}")
    given = [e for e in rollout["timeline"] if e["event"] == "given"]
    assert [len(e["proxies"]) for e in given] == [1, 4, 5]
    assert [e["share"] for e in given] == [10, 50, 100]
    steps = [e["at"] for e in rollout["timeline"] if e["event"] in ("given", "complete")]
    assert all(b - a >= INTERVAL for a, b in pairwise(steps))
    ran = watcher.ran(rollout["candidate"])
    first = given[0]["proxies"][0]
    assert all(ran[first] < ran[p] for p in ids if p != first)
    assert rollout["newVersion"]["errors5xx"] == 0
    assert not any(status >= 500 or status == 0 for _, status in traffic.statuses)


def test_a_change_that_breaks_a_route_is_rolled_back_after_the_first_step(
        fleet: Fleet) -> None:
    plane, port, ids = fleet
    good = _settled(plane, ids)
    with Traffic(port) as traffic, Watcher(plane) as watcher:
        plane.must_put(_route(broken=True))
        rollout = _wait_for_phase(plane, "RolledBack")
        wait_until(lambda: _on(plane, good) == set(ids), timeout=15,
                   what="every proxy back on the good version")
    _print_timeline("bad change", rollout, watcher, ids)
    print(f"  traffic: {dict(traffic.statuses)}")
    bad = rollout["candidate"]
    assert rollout["step"] == 1 and len(rollout["given"]) == 1
    assert "exceeds" in rollout["reason"]
    assert rollout["newVersion"]["ratio"] > 0.05 + rollout["oldVersion"]["ratio"]
    never = [p for p in ids if p not in watcher.ran(bad)]
    assert len(never) == PROXIES - 1, watcher.ran(bad)
    fleet = _fleet(plane.get("/v1/status")[1])
    served_bad = [p["id"] for p in fleet["proxies"]
                  if p.get("health", {}).get("traffic", {}).get(bad, {}).get("requests")]
    assert served_bad == rollout["given"]
