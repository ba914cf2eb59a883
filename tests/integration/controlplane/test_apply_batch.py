"""Atomic applies (#15 item 3) against a real control plane on SQLite and on a real etcd:
one apply is one store revision and one IR version (no intermediate version where a Route's
new Upstream is missing, so no 500 under load); a batch with a bad resource writes nothing
and names it; --prune deletes only what the selector labels; diff shows apply's plan."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from propylon.config import load_paths
from tests.integration.controlplane.conftest import Cluster, ControlPlane
from tests.integration.controlplane.helpers import (
    ETCD,
    free_port,
    gateway,
    http,
    route,
    served_by,
    start_etcd,
    upstream,
    wait_until,
)
from tests.support.load import LoadClient

_INSTALLED = re.compile(r"configuration \S+ installed on")


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.skipif(
    ETCD is None, reason="etcd-server (Debian package) is not installed"))])
def plane(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[ControlPlane]:
    store = start_etcd(cluster.procs, cluster.tmp) if request.param == "etcd" else None
    yield cluster.control(store=store)


def _cli(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROPYLON_CONTROL": plane.url, "PROPYLON_TOKEN": plane.token}
    return subprocess.run([sys.executable, "-m", "propylon", *args], env=env, text=True,
                          capture_output=True, timeout=60)


def _write(path: Path, docs: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump_all(docs))


def _labelled(resource: dict[str, Any], **labels: str) -> dict[str, Any]:
    resource["metadata"]["labels"] = labels
    return resource


def _metric(plane: ControlPlane, name: str, **labels: str) -> float:
    status, text = http("GET", plane.url + "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _acked(plane: ControlPlane, key: str) -> bool:
    fleet = next((g for g in plane.get("/v1/status")[1]["gateways"] if g["gateway"] == key),
                 None)
    return bool(fleet and fleet["proxies"]) and all(
        p.get("version") == fleet["version"] for p in fleet["proxies"])


def test_one_apply_is_one_version_and_no_5xx_under_load(
        plane: ControlPlane, cluster: Cluster, tmp_path: Path) -> None:
    gw, old, new = free_port(), cluster.echo("svc"), cluster.echo("svc-new")
    config = tmp_path / "config"
    config.mkdir()
    _write(config / "base.yaml", [gateway("edge", "infra", gw, ["shop"]),
                                  upstream("svc", "shop", old), route("main", "shop", "/", "svc")])
    assert _cli(plane, "apply", "-f", str(config)).returncode == 0
    cluster.proxy("proxy", plane, "infra/edge", log_level="info")
    wait_until(lambda: served_by(gw, "/new/x") == (200, "svc"), what="the proxy to serve")
    wait_until(lambda: _acked(plane, "infra/edge"), what="an ACK")
    versions = _metric(plane, "propylon_control_gateway_versions_total", gateway="infra/edge")
    installs = len(_INSTALLED.findall(cluster.procs.log("proxy")))

    load = LoadClient(gw, "127.0.0.1", duration=60, path="/new/x")
    load.start()
    try:
        wait_until(lambda: load.snapshot()[0] > 50, what="load before the apply")
        _write(config / "new.yaml", [upstream("svc-new", "shop", new),
                                     route("new", "shop", "/new", "svc-new")])
        applied = _cli(plane, "apply", "-f", str(config))
        assert applied.returncode == 0, applied.stderr
        wait_until(lambda: served_by(gw, "/new/x") == (200, "svc-new"), what="the new route")
        sent = load.snapshot()[0]
        wait_until(lambda: load.snapshot()[0] > sent + 50, what="load after the apply")
    finally:
        load.stop()
        load.join(10)

    assert load.result.errors == 0, load.result.error_kinds
    assert all(status < 500 for status in load.result.statuses), load.result.statuses
    assert "Route shop/new created" in applied.stdout
    assert "Upstream shop/svc-new created" in applied.stdout
    assert applied.stdout.count("unchanged") == 3
    revision = re.search(r"applied as revision (\S+)", applied.stdout)
    assert revision is not None, applied.stdout
    for path in ("/v1/resources/route/shop/new", "/v1/resources/upstream/shop/svc-new"):
        assert plane.get(path)[1]["metadata"]["resourceVersion"] == revision.group(1)
    wait_until(lambda: _acked(plane, "infra/edge"), what="the ACK of the new version")
    assert _metric(plane, "propylon_control_gateway_versions_total",
                   gateway="infra/edge") == versions + 1
    assert len(_INSTALLED.findall(cluster.procs.log("proxy"))) == installs + 1


def test_a_batch_with_one_bad_resource_writes_nothing(plane: ControlPlane) -> None:
    bad = route("bad", "shop", "/bad", "svc")
    bad["spec"]["bogus"] = 1
    no_port = upstream("broken", "shop", 1)
    no_port["spec"]["endpoints"][0]["port"] = "eighty"
    batch = {"resources": [upstream("svc", "shop", 9), bad, route("good", "shop", "/", "svc"),
                           no_port, route("good", "shop", "/again", "svc"), "not a resource"]}
    status, body = http("POST", plane.url + "/v1/apply", batch, plane.token)
    assert status == 422, body
    named = {(e["kind"], e["name"]): e for e in body["errors"]}
    assert set(named) == {("Route", "bad"), ("Upstream", "broken"), ("Route", "good"),
                          (None, None)}
    assert named[("Route", "bad")]["index"] == 1
    assert any("spec.bogus: unknown field" in r for r in named[("Route", "bad")]["reasons"])
    assert any("spec.endpoints[0].port" in r for r in named[("Upstream", "broken")]["reasons"])
    assert named[("Route", "good")]["index"] == 4
    assert "also at resources[2]" in named[("Route", "good")]["reasons"][0]
    assert named[(None, None)]["index"] == 5
    assert any(r.startswith("Route shop/bad: spec.bogus") for r in body["reasons"])
    for kind in ("upstream", "route"):
        assert plane.get(f"/v1/resources/{kind}")[1]["items"] == []

    stale = upstream("svc", "shop", 9)
    stale["metadata"]["resourceVersion"] = "12345"
    status, body = http("POST", plane.url + "/v1/apply",
                        {"resources": [route("r", "shop", "/", "svc"), stale]}, plane.token)
    assert status == 409, body
    assert body["errors"][0]["name"] == "svc" and "stale" in body["errors"][0]["reasons"][0]
    assert plane.get("/v1/resources/route")[1]["items"] == []


def test_prune_deletes_only_labelled_resources_no_longer_present(
        plane: ControlPlane, tmp_path: Path) -> None:
    plane.must_put(_labelled(route("theirs", "shop", "/t", "svc"), team="other"))
    plane.must_put(route("unlabelled", "shop", "/u", "svc"))
    config = tmp_path / "shop.yaml"
    mine = [_labelled(upstream("svc", "shop", 9), team="shop"),
            _labelled(route("a", "shop", "/a", "svc"), team="shop"),
            _labelled(route("b", "shop", "/b", "svc"), team="shop")]
    _write(config, [*mine, route("stray", "shop", "/s", "svc")])
    first = _cli(plane, "apply", "-f", str(config), "--prune", "-l", "team=shop")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 3 and "pruned" not in first.stdout
    assert "Route shop/stray skipped" in first.stderr  # -l filters the files, as in kubectl
    assert plane.get("/v1/resources/route/shop/stray")[0] == 404

    _write(config, [mine[0], mine[2]])
    second = _cli(plane, "apply", "-f", str(config), "--prune", "-l", "team=shop")
    assert second.returncode == 0, second.stderr
    assert "Route shop/a pruned" in second.stdout
    assert second.stdout.count("pruned") == 1
    names = {r["metadata"]["name"] for r in plane.get("/v1/resources/route")[1]["items"]}
    assert names == {"b", "theirs", "unlabelled"}

    assert _cli(plane, "apply", "-f", str(config), "--prune").returncode == 2
    unbounded = _cli(plane, "apply", "-f", str(config), "--prune", "-l", "team!=x")
    assert unbounded.returncode == 2 and "require a label" in unbounded.stderr


def test_prune_refuses_a_set_with_nothing_to_apply(cluster: Cluster, tmp_path: Path) -> None:
    """An empty folder (a failed checkout) or files whose every resource -l skips (another
    team's folder) would make --prune delete every resource the selector selects: refused,
    as kubectl refuses "no objects passed to apply"; nothing is deleted."""
    plane = cluster.control()
    mine = [_labelled(upstream("svc", "shop", 9), team="shop"),
            _labelled(route("a", "shop", "/a", "svc"), team="shop")]
    config = tmp_path / "shop.yaml"
    _write(config, mine)
    assert _cli(plane, "apply", "-f", str(config), "--prune", "-l", "team=shop").returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other.yaml"
    _write(other, [_labelled(route("o", "other", "/o", "svc"), team="other")])
    for files in (empty, other):
        for verb in ("apply", "diff"):
            done = _cli(plane, verb, "-f", str(files), "--prune", "-l", "team=shop")
            assert done.returncode == 1, (verb, files, done.stdout, done.stderr)
            assert "nothing to apply" in done.stderr, done.stderr
    status, body = http("POST", plane.url + "/v1/apply",
                        {"resources": [], "prune": {"selector": {"matchLabels": {"team": "shop"}}}},
                        plane.token)
    assert status == 422 and "nothing to apply" in body["reasons"][0], body
    assert plane.get("/v1/resources/route/shop/a")[0] == 200
    assert plane.get("/v1/resources/upstream/shop/svc")[0] == 200


def _diff_plan(output: str) -> set[tuple[str, str]]:
    marks = {"+": "create", "~": "update", "-": "delete"}
    found = re.findall(r"^  ([+~-]) (\w+ \S+) \(", output, re.MULTILINE)
    return {(marks[mark], ref) for mark, ref in found}


def _apply_plan(output: str) -> set[tuple[str, str]]:
    verbs = {"created": "create", "configured": "update", "pruned": "delete"}
    found = re.findall(r"^(\w+ \S+) (created|configured|pruned)$", output, re.MULTILINE)
    return {(verbs[verb], ref) for ref, verb in found}


def test_diff_shows_the_plan_apply_carries_out(cluster: Cluster, tmp_path: Path) -> None:
    plane = cluster.control()
    config = tmp_path / "config.yaml"
    docs = [gateway("edge", "infra", 1, ["shop"]),
            _labelled(upstream("svc", "shop", 9), app="shop"),
            _labelled(route("a", "shop", "/a", "svc"), app="shop"),
            _labelled(route("b", "shop", "/b", "svc"), app="shop")]
    _write(config, docs)
    assert _cli(plane, "apply", "-f", str(config)).returncode == 0
    docs[3]["spec"]["rules"][0]["matches"][0]["path"]["prefix"] = "/bee"
    docs.append(_labelled(route("c", "shop", "/c", "svc"), app="shop"))
    _write(config, [docs[1], docs[3], docs[4]])  # drops the Gateway (unlabelled) and route a
    args = ("-f", str(config), "--prune", "-l", "app=shop")

    diff = _cli(plane, "diff", *args)
    assert diff.returncode == 3, diff.stderr
    planned = _diff_plan(diff.stdout)
    assert planned == {("create", "Route shop/c"), ("update", "Route shop/b"),
                       ("delete", "Route shop/a")}
    assert "plan: 1 to create, 1 to update, 1 unchanged, 1 to delete" in diff.stdout
    applied = _cli(plane, "apply", *args)
    assert applied.returncode == 0, applied.stderr
    assert _apply_plan(applied.stdout) == planned
    assert "Upstream shop/svc unchanged" in applied.stdout
    again = _cli(plane, "diff", *args)
    assert again.returncode == 0 and "no changes" in again.stdout
    assert plane.get("/v1/resources/gateway/infra/edge")[0] == 200  # unlabelled: not pruned


def test_apply_sends_yaml_1_1_scalars_as_the_strings_written(
        cluster: Cluster, tmp_path: Path) -> None:
    """``yes`` and ``1.10`` where a string is expected reach the control plane as written, as
    ``validate`` and standalone mode read them (#15 item 5); apply used to read the files
    again with PyYAML's rules and stopped on them."""
    plane = cluster.control()
    config = tmp_path / "config.yaml"
    config.write_text("""\
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: surprises, namespace: shop}
spec:
  rules:
    - matches: [{path: {prefix: /s}, headers: [{name: x-beta, value: NO}]}]
      directResponse: {status: 200, body: "on"}
      policies: [{headers: {response: {set: {x-resp: yes, x-version: 1.10, x-mode: 010,
                                             x-date: 2024-01-01}}}}]
""")
    diff = _cli(plane, "diff", "-f", str(config))
    assert diff.returncode == 3 and "+ Route shop/surprises" in diff.stdout, diff.stderr
    applied = _cli(plane, "apply", "-f", str(config))
    assert applied.returncode == 0, applied.stderr
    assert "Route shop/surprises created" in applied.stdout
    status, stored = plane.get("/v1/resources/route/shop/surprises")
    assert status == 200
    rule = stored["spec"]["rules"][0]
    assert rule["matches"][0]["headers"][0]["value"] == "NO"
    assert rule["directResponse"]["body"] == "on"
    assert rule["policies"][0]["headers"]["response"]["set"] == {
        "x-resp": "yes", "x-version": "1.10", "x-mode": "010", "x-date": "2024-01-01"}
    again = _cli(plane, "diff", "-f", str(config))
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout


def test_apply_sends_numbers_written_in_metadata_as_the_strings_validate_reads(
        cluster: Cluster, tmp_path: Path) -> None:
    """``name: 123``, ``namespace: 010`` and ``labels: {n: 7, v: 1.10}`` are valid in files
    (``validate`` and ``run`` read a number where a string is expected as its text); apply
    and diff sent the numbers, which the control plane refuses in JSON metadata."""
    plane = cluster.control()
    config = tmp_path / "config.yaml"
    config.write_text("""\
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: 123, namespace: 010, labels: {n: 7, v: 1.10, team: shop}}
spec:
  rules:
    - matches: [{path: {prefix: /n}}]
      directResponse: {status: 200, body: "7"}
""")
    assert load_paths([config]).errors == []  # as `run` and `validate` read it
    diff = _cli(plane, "diff", "-f", str(config))
    assert diff.returncode == 3 and "+ Route 010/123" in diff.stdout, diff.stdout + diff.stderr
    applied = _cli(plane, "apply", "-f", str(config), "--prune", "-l", "team=shop")
    assert applied.returncode == 0, applied.stderr
    assert "Route 010/123 created" in applied.stdout
    status, stored = plane.get("/v1/resources/route/010/123")
    assert status == 200
    assert stored["metadata"]["labels"] == {"n": "7", "v": "1.10", "team": "shop"}
    again = _cli(plane, "diff", "-f", str(config), "--prune", "-l", "n=7")
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr
