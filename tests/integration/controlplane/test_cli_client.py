"""The GitOps client's listing and output options against a real control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.integration.controlplane.conftest import Cluster, ControlPlane
from tests.integration.controlplane.helpers import gateway, upstream


@pytest.fixture(scope="module")
def plane(module_cluster: Cluster) -> ControlPlane:
    """One control plane for the module: the tests only read."""
    plane = module_cluster.control()
    plane.must_put(gateway("edge", "infra", 1, ["shop"]))
    for namespace in ("shop", "team-a"):
        plane.must_put(upstream("echo", namespace, 9))
    return plane


def _cli(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROPYLON_CONTROL": plane.url, "PROPYLON_TOKEN": plane.token}
    return subprocess.run([sys.executable, "-m", "propylon", *args], env=env, text=True,
                          capture_output=True, timeout=60)


def _rows(table: str) -> list[list[str]]:
    return [line.split()[:2] for line in table.splitlines()[1:]]


@pytest.mark.parametrize("kind", [pytest.param("upstream", id="singular"),
                                  pytest.param("upstreams", id="plural"),
                                  pytest.param("Upstream", id="kind-name")])
def test_get_lists_only_the_namespace_given_with_n(plane: ControlPlane, kind: str) -> None:
    listed = _cli(plane, "get", kind, "-n", "team-a")
    assert listed.returncode == 0, listed.stderr
    assert _rows(listed.stdout) == [["team-a", "echo"]], listed.stdout


def test_get_without_n_lists_every_namespace(plane: ControlPlane) -> None:
    listed = _cli(plane, "get", "upstreams")
    assert listed.returncode == 0, listed.stderr
    assert _rows(listed.stdout) == [["shop", "echo"], ["team-a", "echo"]], listed.stdout


def test_get_one_resource_of_a_plural_kind_as_json(plane: ControlPlane) -> None:
    one = _cli(plane, "get", "upstreams", "echo", "-n", "team-a", "-o", "json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["metadata"]["namespace"] == "team-a"


def test_get_policies_is_the_policy_kind(plane: ControlPlane) -> None:
    listed = _cli(plane, "get", "policies")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["NAMESPACE", "NAME", "VERSION"]


@pytest.mark.parametrize(("output", "parse"), [pytest.param("yaml", yaml.safe_load, id="yaml"),
                                               pytest.param("json", json.loads, id="json")])
def test_status_as_data(plane: ControlPlane, output: str, parse) -> None:  # type: ignore[no-untyped-def]
    result = _cli(plane, "status", "-o", output)
    assert result.returncode == 0, result.stderr
    data = parse(result.stdout)
    assert isinstance(data, dict) and "resources" in data, result.stdout
