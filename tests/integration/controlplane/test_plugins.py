"""Plugins through the control plane (docs/plugins.md, "Control plane"): sections checked at
PUT with the plugins installed where it runs; a name it does not have refused unless declared
with ``--external-plugin``, then passed on unchecked; a proxy without that plugin NACKs the
version with the reason and keeps serving; a proxy with the plugin serves it."""

from __future__ import annotations

from typing import Any

from tests.integration.controlplane.conftest import Cluster, ControlPlane
from tests.integration.controlplane.helpers import (
    free_port,
    gateway,
    http,
    route,
    upstream,
    wait_until,
)


def plugin_policy(name: str, plugins: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "propylon.dev/v1", "kind": "Policy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"targetRefs": [{"kind": "Route", "name": "main"}], "plugins": plugins}}


def fleet(plane: ControlPlane, key: str = "shop/edge") -> dict[str, Any]:
    body = plane.get("/v1/status")[1]
    return next(g for g in body["gateways"] if g["gateway"] == key)


def serve(cluster: Cluster, plane: ControlPlane) -> int:
    port = free_port()
    for resource in [gateway("edge", "shop", port, ["shop"]),
                     upstream("svc", "shop", cluster.echo("svc")),
                     route("main", "shop", "/", "svc")]:
        plane.must_put(resource)
    return port


def test_plugin_sections_are_checked_at_put(cluster: Cluster) -> None:
    plane = cluster.control()
    status, body = plane.put(plugin_policy("bad", [
        {"name": "jsonRewrite", "config": {"maxBodySize": "big"}}]))
    assert status == 422, body
    assert any("spec.plugins[0].config.maxBodySize: input should be a valid integer" in reason
               for reason in body["reasons"]), body
    status, body = plane.put(plugin_policy("unknown", [{"name": "edgeOnly"}]))
    assert status == 422, body
    assert any('spec.plugins[0].name: no plugin named "edgeOnly" is installed (installed: '
               "jsonRewrite, " in reason for reason in body["reasons"]), body


def test_an_installed_plugin_is_served_by_a_connected_proxy(cluster: Cluster) -> None:
    plane = cluster.control()
    port = serve(cluster, plane)
    plane.must_put(plugin_policy("rewrite", [{"name": "jsonRewrite", "config": {
        "remove": ["headers"], "set": {"via": "control-plane"},
        "responseHeaders": {"x-rewritten": "1"}}}]))
    cluster.proxy("proxy", plane, "shop/edge")

    def rewritten() -> dict[str, Any] | None:
        status, doc = http("GET", f"http://127.0.0.1:{port}/x", timeout=3.0)
        return doc if status == 200 and isinstance(doc, dict) and "via" in doc else None

    doc = wait_until(rewritten, timeout=20, what="the rewritten answer")
    assert doc["via"] == "control-plane" and "headers" not in doc and doc["service"] == "svc"


def test_a_proxy_without_an_external_plugin_nacks_and_keeps_serving(cluster: Cluster) -> None:
    plane = cluster.control(extra=("--external-plugin", "edgeOnly"))
    port = serve(cluster, plane)
    cluster.proxy("proxy", plane, "shop/edge")
    wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/")[0] == 200, timeout=20,
               what="the first version served")
    plane.must_put(plugin_policy("edge-only", [{"name": "edgeOnly", "config": {"any": [1]}}]))

    def nacked() -> dict[str, Any] | None:
        proxies = fleet(plane)["proxies"]
        return proxies[0] if proxies and proxies[0].get("state") == "NACK" else None

    proxy = wait_until(nacked, timeout=20, what="a NACK")
    assert 'Policy shop/edge-only -> Route shop/main: no plugin named "edgeOnly" is installed ' \
           "on this proxy (installed: jsonRewrite, " in proxy["lastError"], proxy
    assert http("GET", f"http://127.0.0.1:{port}/")[0] == 200  # the last good version serves
