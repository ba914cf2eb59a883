"""The REST API and the GitOps client against one control plane on SQLite (no proxies)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.controlplane.conftest import Cluster, ControlPlane
from tests.integration.controlplane.helpers import gateway, http, route, upstream, wait_until


@pytest.fixture
def plane(cluster: Cluster) -> ControlPlane:
    return cluster.control()


@pytest.fixture(scope="module")
def shared_plane(module_cluster: Cluster) -> ControlPlane:
    """One control plane for the tests that write nothing another one reads (no test on it
    writes an Upstream, a Gateway or a Route)."""
    return module_cluster.control()


def test_every_request_needs_the_token(shared_plane: ControlPlane) -> None:
    plane = shared_plane
    mode = stat.S_IMODE(os.stat(plane.token_file).st_mode)
    assert mode == 0o600
    for method, path in [("GET", "/v1/status"), ("GET", "/openapi.json"),
                         ("GET", "/v1/resources/route"), ("PUT", "/v1/resources/route/a/b"),
                         ("GET", "/v1/gateways/a/b/ir")]:
        assert http(method, plane.url + path, {})[0] == 401, path
        assert http(method, plane.url + path, {}, token="wrong")[0] == 401, path
    assert plane.get("/v1/status")[0] == 200


def test_stale_resource_version_is_refused(plane: ControlPlane) -> None:
    created = plane.must_put(upstream("echo", "shop", 9))
    version = created["metadata"]["resourceVersion"]
    changed = upstream("echo", "shop", 10)
    changed["metadata"]["resourceVersion"] = version
    assert plane.put(changed)[0] == 200
    stale = upstream("echo", "shop", 11)
    stale["metadata"]["resourceVersion"] = version
    status, body = plane.put(stale)
    assert status == 409, body
    status, _ = http("DELETE", f"{plane.url}/v1/resources/upstream/shop/echo"
                     f"?resourceVersion={version}", token=plane.token)
    assert status == 409
    status, current = plane.get("/v1/resources/upstream/shop/echo")
    assert current["spec"]["endpoints"][0]["port"] == 10


def test_schema_errors_get_422_with_reasons(shared_plane: ControlPlane) -> None:
    plane = shared_plane
    bad = upstream("echo", "shop", 9)
    bad["spec"]["endpoints"][0]["port"] = "not-a-port"
    bad["spec"]["bogus"] = 1
    status, body = plane.put(bad)
    assert status == 422
    assert any("spec.endpoints[0].port" in r for r in body["reasons"])
    assert any("spec.bogus: unknown field" in r for r in body["reasons"])
    assert plane.get("/v1/resources/upstream/shop/echo")[0] == 404


def test_reference_errors_are_accepted_and_invalid(plane: ControlPlane) -> None:
    plane.must_put(gateway("edge", "infra", 1, ["shop"]))
    plane.must_put(route("shop", "shop", "/", "missing"))
    plane.must_put(route("other", "elsewhere", "/", "missing"))

    def states() -> dict[str, dict[str, object]]:
        body = plane.get("/v1/status")[1]
        return {f"{r['kind']} {r['namespace']}/{r['name']}": r for r in body["resources"]}

    found = wait_until(lambda: (s := states()).get("Route elsewhere/other") and s,
                       what="statuses")
    assert found["Route shop/shop"]["state"] == "Invalid"
    assert "missing" in " ".join(found["Route shop/shop"]["reasons"])  # type: ignore[arg-type]
    # ownership: the Gateway admits only "shop"; the other team's Route is not attached
    assert found["Route elsewhere/other"]["gateways"] == []
    assert "not selected" in " ".join(found["Route elsewhere/other"]["reasons"])  # type: ignore[arg-type]


def test_secrets_are_redacted(shared_plane: ControlPlane) -> None:
    plane = shared_plane
    consumer = {"apiVersion": "propylon.dev/v1", "kind": "Consumer",
                "metadata": {"name": "ann", "namespace": "shop"},
                "spec": {"credentials": {"apiKeys": [{"secretRef": {"env": "ANN_KEY"}}]}}}
    answer = plane.must_put(consumer)
    assert "ANN_KEY" not in str(answer)
    assert "ANN_KEY" not in str(plane.get("/v1/resources/consumer/shop/ann")[1])
    assert "ANN_KEY" not in str(plane.get("/v1/resources/consumer")[1])


def _cli(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROPYLON_CONTROL": plane.url, "PROPYLON_TOKEN": plane.token}
    return subprocess.run([sys.executable, "-m", "propylon", *args], env=env, text=True,
                          capture_output=True, timeout=60)


def test_apply_diff_prune_get_status(plane: ControlPlane, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    docs = [gateway("edge", "infra", 1, ["shop"]), upstream("echo", "shop", 9),
            route("a", "shop", "/a", "echo", {"app": "shop"}),
            route("b", "shop", "/b", "echo", {"app": "shop"})]
    config.write_text(yaml.safe_dump_all(docs))
    first = _cli(plane, "apply", "-f", str(config))
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 4
    again = _cli(plane, "apply", "-f", str(config))
    assert again.stdout.count("unchanged") == 4, again.stdout
    assert _cli(plane, "diff", "-f", str(config)).returncode == 0

    docs[3]["spec"]["rules"][0]["matches"][0]["path"]["prefix"] = "/bee"
    config.write_text(yaml.safe_dump_all(docs[:1] + docs[1:2] + docs[3:]))  # drop route a
    diff = _cli(plane, "diff", "-f", str(config))
    assert diff.returncode == 3  # changes: a negative answer, not a failure (1)
    assert "Gateway infra/edge:" in diff.stdout and "~ Route shop/b" in diff.stdout
    assert "+      - path:" in diff.stdout or "/bee" in diff.stdout

    pruned = _cli(plane, "apply", "-f", str(config), "--prune", "-l", "app=shop")
    assert pruned.returncode == 0, pruned.stderr
    assert "Route shop/a pruned" in pruned.stdout and "Route shop/b configured" in pruned.stdout
    listed = _cli(plane, "get", "route", "-n", "shop")
    assert "b" in listed.stdout.split() and "a" not in listed.stdout.split()
    one = _cli(plane, "get", "route", "b", "-n", "shop")
    assert "/bee" in one.stdout
    status = _cli(plane, "status")
    assert status.returncode == 0 and "infra/edge" in status.stdout


def test_openapi_document(shared_plane: ControlPlane) -> None:
    plane = shared_plane
    status, doc = plane.get("/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert "/v1/resources/{kind}/{namespace}/{name}" in doc["paths"]


def test_openapi_document_describes_every_kind_the_api_takes(plane: ControlPlane) -> None:
    """A client made from /openapi.json reaches the Kubernetes kinds the API takes (Gateway
    API, Ingress, Service, ...) as well as propylon.dev/v1's, under their Kubernetes names."""
    doc = plane.get("/openapi.json")[1]
    one = doc["paths"]["/v1/resources/{kind}/{namespace}/{name}"]
    params = {p["name"]: p["schema"] for p in one["parameters"]}
    kinds = params["kind"]["enum"]
    assert {"route", "gateway", "httproute", "grpcroute", "ingress", "service",
            "endpointslice", "referencegrant"} <= set(kinds)
    for kind in kinds:  # every kind documented is served, none more
        assert plane.get(f"/v1/resources/{kind}")[0] == 200, kind
    assert plane.get("/v1/resources/widget")[0] == 404

    httproute = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "api.v1-route", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "edge", "namespace": "infra"}],
                 "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]}}
    assert plane.put(httproute)[0] in (200, 201)
    described = doc["components"]["schemas"]["Resource"]["properties"]
    assert httproute["apiVersion"] in described["apiVersion"]["enum"]
    assert httproute["kind"] in described["kind"]["enum"]
    name = params["name"]
    assert re.fullmatch(name["pattern"], "api.v1-route") and name["maxLength"] == 253


def test_explain_against_the_control_plane(cluster) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from tests.integration.controlplane.helpers import free_port, gateway, route, upstream

    plane = cluster.control()
    for resource in [gateway("edge", "infra", free_port(), ["shop"]),
                     upstream("svc", "shop", free_port()), route("shop", "shop", "/shop", "svc")]:
        plane.must_put(resource)
    listeners = plane.get("/v1/resources/gateway/infra/edge")[1]["spec"]["listeners"]
    out = subprocess.run(
        [sys.executable, "-m", "propylon", "explain", "GET",
         f"http://127.0.0.1:{listeners[0]['port']}/shop/x", "--control", plane.url,
         "--token-file", str(plane.token_file)],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Gateway infra/edge" in out.stdout and "forward to upstream shop/svc" in out.stdout


def test_a_listing_shows_what_each_get_shows(plane: ControlPlane) -> None:
    """A kind's listing takes each resource's content hash from what the last translation
    validated (the single GET validates it again): the same answers, and the same again after
    a change; listing changes nothing stored (a batch of the same resources is unchanged)."""
    resources = [gateway("edge", "infra", 1, ["shop"]), upstream("echo", "shop", 9),
                 route("a", "shop", "/a", "echo", {"app": "shop"}),
                 route("b", "shop", "/b", "echo")]
    for resource in resources:
        plane.must_put(resource)

    def translated(prefix: str) -> bool:
        status = plane.get("/v1/status")[1]
        seen = {(r["kind"], r["name"]) for r in status["resources"]}
        served = plane.get("/v1/gateways/infra/edge/ir?schemas=2,3")
        return {("Route", "a"), ("Route", "b")} <= seen and prefix in str(served[1])

    def listing_matches_gets() -> None:
        for kind in ("gateway", "upstream", "route"):
            status, listed = plane.get(f"/v1/resources/{kind}")
            assert status == 200 and listed["items"] and listed["kind"] == kind.capitalize()
            assert set(listed) == {"items", "kind"}
            for item in listed["items"]:
                meta = item["metadata"]
                one = plane.get(f"/v1/resources/{kind}/{meta['namespace']}/{meta['name']}")[1]
                assert item == one
                assert len(meta["contentHash"]) == 16 and meta["resourceVersion"]

    wait_until(lambda: translated("/b"))
    listing_matches_gets()
    before = plane.get("/v1/resources/route/shop/b")[1]["metadata"]["contentHash"]
    resources[3]["spec"]["rules"][0]["matches"][0]["path"]["prefix"] = "/bee"
    plane.must_put(resources[3])
    wait_until(lambda: translated("/bee"))
    listing_matches_gets()
    assert plane.get("/v1/resources/route/shop/b")[1]["metadata"]["contentHash"] != before
    status, body = http("POST", plane.url + "/v1/apply", {"resources": resources}, plane.token)
    assert status == 200, body
    assert {c["action"] for c in body["changes"]} == {"unchanged"}
