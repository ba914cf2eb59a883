"""Gateway API objects through the control plane: PUT of each kind, ``apply -f`` of a file of
them, a proxy of the converted Gateway serving the routes, statuses with Gateway API
conditions in ``/v1/status`` and ``propylon status``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.integration.controlplane.conftest import Cluster
from tests.integration.controlplane.helpers import free_port, http, served_by, wait_until


def gateway_api(port: int, echo_port: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "edge", "namespace": "infra"},
         "spec": {"gatewayClassName": "propylon",
                  "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                  "listeners": [{"name": "http", "port": port, "protocol": "HTTP",
                                 "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"parentRefs": [{"name": "edge", "namespace": "infra"}],
                  "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/shop"}}],
                             "backendRefs": [{"name": "shop", "port": 80}]},
                            {"matches": [{"path": {"type": "PathPrefix", "value": "/gone"}}],
                             "backendRefs": [{"name": "gone", "port": 80}]}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": echo_port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "shop-1", "namespace": "shop",
                      "labels": {"kubernetes.io/service-name": "shop"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": echo_port}],
         "endpoints": [{"addresses": ["127.0.0.1"]}]},
    ]


def _path(doc: dict[str, Any]) -> str:
    meta = doc["metadata"]
    return f"/v1/resources/{doc['kind'].lower()}/{meta['namespace']}/{meta['name']}"


def test_put_each_kind_then_a_proxy_serves_it(cluster: Cluster) -> None:
    plane = cluster.control()
    echo = cluster.echo("shop")
    port = free_port()
    for doc in gateway_api(port, echo):
        status, body = http("PUT", plane.url + _path(doc), doc, plane.token)
        assert status in (200, 201), body
    status, listed = plane.get("/v1/resources/httproute")
    assert status == 200 and [i["metadata"]["name"] for i in listed["items"]] == ["shop"]
    cluster.proxy("proxy", plane, "infra/edge")
    wait_until(lambda: served_by(port, "/shop/x") == (200, "shop"), what="the HTTPRoute")
    assert served_by(port, "/gone")[0] == 500
    status, answer = plane.get("/v1/status")
    statuses = {f"{s['kind']} {s['namespace']}/{s['name']}": s for s in answer["resources"]}
    route = statuses["HTTPRoute shop/shop"]
    assert any("ResolvedRefs=False BackendNotFound" in r for r in route["reasons"]), route
    assert "Programmed=True Programmed" in statuses["Gateway infra/edge"]["reasons"]


def test_apply_file_of_gateway_api_objects(cluster: Cluster, tmp_path: Path) -> None:
    plane = cluster.control()
    echo = cluster.echo("shop")
    port = free_port()
    manifest = tmp_path / "k8s.yaml"
    manifest.write_text(yaml.safe_dump_all(gateway_api(port, echo)))
    env = {**os.environ, "PROPYLON_CONTROL": plane.url, "PROPYLON_TOKEN": plane.token}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "propylon", *args], env=env, text=True,
                              capture_output=True, timeout=60)

    applied = cli("apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    cluster.proxy("proxy", plane, "infra/edge")
    wait_until(lambda: served_by(port, "/shop/x") == (200, "shop"), what="the HTTPRoute")
    status = cli("status")
    assert "HTTPRoute shop/shop" in status.stdout, status.stdout + status.stderr
    assert "ResolvedRefs=False" in status.stdout
    listed = cli("get", "httproutes")
    assert listed.returncode == 0 and "shop" in listed.stdout, listed.stdout + listed.stderr
