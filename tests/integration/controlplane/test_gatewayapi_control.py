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


def _as_kubectl_dumps_them(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """``docs`` as ``kubectl get ... -A -o yaml`` prints them: one v1 List, each object with
    the API server's resourceVersion, uid, managedFields and a status."""
    items = []
    for index, doc in enumerate(docs):
        meta = {**doc["metadata"], "resourceVersion": str(48_000 + index), "generation": 1,
                "uid": f"0b6a3b5e-0000-4000-8000-{index:012d}",
                "creationTimestamp": "2024-05-01T10:00:00Z",
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]}
        items.append({**doc, "metadata": meta, "status": {}})
    return {"apiVersion": "v1", "kind": "List", "items": items,
            "metadata": {"resourceVersion": ""}}


def test_apply_of_a_kubectl_dump(cluster: Cluster, tmp_path: Path) -> None:
    """A kubectl List, its objects carrying the API server's resourceVersions, applies (twice:
    those versions are not this control plane's), and its PUT of one exported object too;
    a stale version of the control plane's own answer is still a conflict."""
    plane = cluster.control()
    echo = cluster.echo("shop")
    port = free_port()
    dump = tmp_path / "dump.yaml"
    dump.write_text(yaml.safe_dump(_as_kubectl_dumps_them(gateway_api(port, echo))))
    env = {**os.environ, "PROPYLON_CONTROL": plane.url, "PROPYLON_TOKEN": plane.token}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "propylon", *args], env=env, text=True,
                              capture_output=True, timeout=60)

    applied = cli("apply", "-f", str(dump))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    status, listed = plane.get("/v1/resources/endpointslice")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["shop-1"]
    again = cli("apply", "-f", str(dump))
    assert again.returncode == 0, again.stdout + again.stderr
    cluster.proxy("proxy", plane, "infra/edge")
    wait_until(lambda: served_by(port, "/shop/x") == (200, "shop"), what="the HTTPRoute")
    # one exported object PUT as kubectl printed it
    exported = _as_kubectl_dumps_them(gateway_api(port, echo))["items"][1]
    exported["spec"]["hostnames"] = ["shop.test"]
    status, body = http("PUT", plane.url + _path(exported), exported, plane.token)
    assert status == 200, body
    # the control plane's own answer still pins its version
    status, current = plane.get(_path(exported))
    assert status == 200 and "contentHash" in current["metadata"]
    stale = {**current, "metadata": {**current["metadata"], "resourceVersion": "1"}}
    status, body = http("PUT", plane.url + _path(exported), stale, plane.token)
    assert status == 409, body
    status, body = http("PUT", plane.url + _path(exported), current, plane.token)
    assert status == 200, body


def test_a_batch_with_a_namespace_is_refused(cluster: Cluster) -> None:
    """The control plane does not take Namespaces (files only): a batch holding one is a
    422 naming it, and nothing is written."""
    plane = cluster.control()
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": "shop", "labels": {"team": "shop"}}}
    batch = {"resources": [*gateway_api(free_port(), 9), namespace]}
    status, body = http("POST", plane.url + "/v1/apply", batch, plane.token)
    assert status == 422, body
    [error] = body["errors"]
    assert (error["index"], error["kind"], error["name"]) == (4, "Namespace", "shop")
    assert "does not take Namespace objects" in error["reasons"][0], error
    status, listed = plane.get("/v1/resources/httproute")
    assert status == 200 and listed["items"] == []


def test_a_gateway_and_routes_of_dotted_names_through_the_control_plane(
        cluster: Cluster) -> None:
    """A Gateway API Gateway ``edge.example.com`` and an HTTPRoute ``api.v1-route`` (DNS
    subdomains, as Kubernetes names them) keep their names: PUT at their URLs, the proxy
    of ``infra/edge.example.com`` gets its IR and serves the route, both Accepted."""
    plane = cluster.control()
    echo = cluster.echo("shop")
    port = free_port()
    docs = gateway_api(port, echo)
    docs[0]["metadata"]["name"] = "edge.example.com"
    docs[1]["metadata"]["name"] = "api.v1-route"
    docs[1]["spec"]["parentRefs"][0]["name"] = "edge.example.com"
    for doc in docs:
        status, body = http("PUT", plane.url + _path(doc), doc, plane.token)
        assert status in (200, 201), body
    cluster.proxy("proxy", plane, "infra/edge.example.com")
    wait_until(lambda: served_by(port, "/shop/x") == (200, "shop"), what="the HTTPRoute")
    status, answer = plane.get("/v1/status")
    statuses = {f"{s['kind']} {s['namespace']}/{s['name']}": s for s in answer["resources"]}
    assert statuses["Gateway infra/edge.example.com"]["state"] == "Accepted", statuses
    route = statuses["HTTPRoute shop/api.v1-route"]
    assert "parent Gateway infra/edge.example.com: Accepted=True Accepted" in route["reasons"]
