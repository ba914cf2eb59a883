"""A conversion keeps what it made of each route object, Gateway and Service
(``config/gatewayapi.py``, ``_Kept``): the next one gives unchanged objects' resources as the
same objects (so translation keeps their rules too) and, whatever it reuses, exactly what a
conversion from scratch gives: resources, origins, conditions, notes and issues (issue #15
item 1: a change of one HTTPRoute among thousands converts that one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from propylon.config import gatewayapi, load_paths
from propylon.config.gatewayapi import Expansion, expand_kubernetes
from propylon.standalone import build_snapshot

GATEWAY = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
           "metadata": {"name": "edge", "namespace": "infra"},
           "spec": {"gatewayClassName": "propylon", "listeners": [
               {"name": "web", "port": 8080, "protocol": "HTTP",
                "allowedRoutes": {"namespaces": {"from": "All"}}},
               {"name": "admin", "port": 8081, "protocol": "HTTP",
                "allowedRoutes": {"namespaces": {"from": "All"}}}]}}
SERVICE = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "back"},
     "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8000}]}},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {"name": "api-1", "namespace": "back",
                  "labels": {"kubernetes.io/service-name": "api"}},
     "addressType": "IPv4", "ports": [{"name": "http", "port": 8000}],
     "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]},
    {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
     "metadata": {"name": "from-teams", "namespace": "back"},
     "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                        "namespace": "team-a"},
                       {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                        "namespace": "team-b"}],
              "to": [{"group": "", "kind": "Service"}]}},
]


def http_route(name: str, namespace: str, path: str, section: str | None = None,
               backend: str = "api") -> dict[str, Any]:
    parent: dict[str, Any] = {"name": "edge", "namespace": "infra"}
    if section is not None:
        parent["sectionName"] = section
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [parent], "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                 "backendRefs": [{"name": backend, "namespace": "back", "port": 80}]}]}}


def write(path: Path, *docs: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path / "0-gateway.yaml", GATEWAY)
    write(tmp_path / "1-service.yaml", *SERVICE)
    write(tmp_path / "team-a.yaml", *(http_route(f"a{i}", "team-a", f"/a{i}", "web")
                                      for i in range(3)))
    write(tmp_path / "team-b.yaml", *(http_route(f"b{i}", "team-b", f"/b{i}")
                                      for i in range(3)))
    return tmp_path


def expand(folder: Path, from_scratch: bool = False) -> Expansion:
    if from_scratch:
        gatewayapi._LAST[0] = None
    loaded = load_paths([folder])
    assert not loaded.unattributed, loaded.errors
    return expand_kubernetes(loaded.resources, loaded.rejected)


def form(expansion: Expansion) -> dict[str, Any]:
    """Everything a conversion gives, as plain data."""
    return {
        "resources": [(r.ref, r.model_dump(mode="json"), str(r.source),
                       repr(getattr(r, "_sections", None)), repr(getattr(r, "_served_on", None)))
                      for r in expansion.resources],
        "origins": expansion.origins, "replaced": expansion.replaced,
        "findings": {key: (str(o.source), o.conditions(), list(o.notes))
                     for key, o in expansion.findings.objects.items()},
        "issues": [str(issue) for issue in expansion.issues],
    }


def by_ref(expansion: Expansion) -> dict[str, Any]:
    return {r.ref: r for r in expansion.resources}


@pytest.mark.parametrize("change", [
    pytest.param(lambda f: write(f / "team-b.yaml", *(http_route(f"b{i}", "team-b", f"/b{i}")
                                                      for i in range(4))),
                 id="a-route-added"),
    pytest.param(lambda f: write(f / "team-b.yaml", http_route("b0", "team-b", "/b0", "admin"),
                                 *(http_route(f"b{i}", "team-b", f"/b{i}") for i in (1, 2))),
                 id="a-route-moved-to-one-listener"),
    pytest.param(lambda f: write(f / "team-b.yaml", http_route("b0", "team-b", "/b0"),
                                 http_route("b1", "team-b", "/b1", backend="gone")),
                 id="a-route-removed-and-one-refers-to-nothing"),
    pytest.param(lambda f: write(f / "team-b.yaml", *(http_route(f"b{i}", "team-b", f"/b{i}")
                                                      for i in range(3)),
                                 {**http_route("b0", "team-b", "/dup")}),
                 id="a-route-defined-twice"),
])
def test_a_change_converts_as_from_scratch_and_keeps_the_unchanged_objects(
        folder: Path, change: Any) -> None:
    before = by_ref(expand(folder, from_scratch=True))
    change(folder)
    kept = expand(folder)
    assert form(kept) == form(expand(folder, from_scratch=True))
    kept_refs = by_ref(kept)
    # an unchanged file's routes: the same Routes, unless an object is rejected (what stands
    # in for it is made anew by each load: everything is converted again)
    same = not kept.replaced
    for name in ("a0", "a1", "a2"):
        assert (kept_refs[f"Route team-a/{name}"] is before[f"Route team-a/{name}"]) is same
    assert (kept_refs["Upstream back/api-80"] is before["Upstream back/api-80"]) is same
    # a route served on some listeners only says which itself: the Gateway stays the same
    assert (kept_refs["Gateway infra/edge"] is before["Gateway infra/edge"]) is same
    assert kept_refs["Route team-a/a0"].served_on("infra/edge") == ("web",)


def test_unchanged_files_give_the_same_resources_and_the_same_statuses(folder: Path) -> None:
    first = expand(folder, from_scratch=True)
    again = expand(folder)
    assert [id(r) for r in again.resources] == [id(r) for r in first.resources]
    assert form(again) == form(first)


def test_changed_endpoints_make_the_upstream_again_and_keep_the_routes(folder: Path) -> None:
    """An EndpointSlice (the object a cluster changes most) only makes a Service's
    references resolve or not: the routes are kept while they resolve as they did, the
    Service's Upstream is made again with the endpoints now."""
    before = by_ref(expand(folder, from_scratch=True))
    service, endpoints, grant = SERVICE
    moved = {**endpoints, "ports": [{"name": "http", "port": 9000}]}
    write(folder / "1-service.yaml", service, moved, grant)
    kept = expand(folder)
    assert form(kept) == form(expand(folder, from_scratch=True))
    after = by_ref(kept)
    upstream = after["Upstream back/api-80"]
    assert upstream is not before["Upstream back/api-80"]
    assert [e.port for e in upstream.spec.endpoints] == [9000]
    assert after["Route team-a/a0"] is before["Route team-a/a0"]
    assert sorted(upstream.spec.allowed_namespaces or []) == ["team-a", "team-b"]
    # no ready endpoint left: the references no longer resolve, the routes are made again
    unready = {**moved, "endpoints": [{"addresses": ["127.0.0.1"],
                                       "conditions": {"ready": False}}]}
    prior = by_ref(expand(folder))
    write(folder / "1-service.yaml", service, unready, grant)
    gone = expand(folder)
    assert "Upstream back/api-80" not in by_ref(gone)
    assert by_ref(gone)["Route team-a/a0"] is not prior["Route team-a/a0"]
    assert form(gone) == form(expand(folder, from_scratch=True))
    write(folder / "1-service.yaml", service, endpoints, grant)  # and back
    assert form(expand(folder)) == form(expand(folder, from_scratch=True))


def test_a_changed_service_keeps_the_routes_its_references_resolve_for_as_before(
        folder: Path) -> None:
    service, endpoints, grant = SERVICE
    # the Service last in its file: a change of it moves no other object of the file
    write(folder / "1-service.yaml", grant, endpoints, service)
    before = by_ref(expand(folder, from_scratch=True))
    ports = [*service["spec"]["ports"], {"name": "admin", "port": 81, "targetPort": 8001}]
    more = {**service, "spec": {"ports": ports}}
    write(folder / "1-service.yaml", grant, endpoints, more)
    after = expand(folder)
    assert form(after) == form(expand(folder, from_scratch=True))
    assert by_ref(after)["Route team-a/a0"] is before["Route team-a/a0"]
    # its port 80 gone: the references to it no longer resolve, the routes are made again
    prior = by_ref(expand(folder))
    other = {**service, "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 8000}]}}
    write(folder / "1-service.yaml", grant, endpoints, other)
    again = expand(folder)
    assert by_ref(again)["Route team-a/a0"] is not prior["Route team-a/a0"]
    assert "Upstream back/api-80" not in by_ref(again)
    assert form(again) == form(expand(folder, from_scratch=True))


def test_a_listener_removed_keeps_the_routes_that_attach_as_they_did(folder: Path) -> None:
    """b0 was attached to both listeners (served on all): with admin gone it attaches as it
    did and is kept, counted on web only. a0, on web only, is now served on every listener
    of the Gateway: its Route changes (no ``served_on``), it is converted again."""
    before = by_ref(expand(folder, from_scratch=True))
    spec = GATEWAY["spec"]
    gateway = {**GATEWAY, "spec": {**spec, "listeners": spec["listeners"][:1]}}
    write(folder / "0-gateway.yaml", gateway)
    after = expand(folder)
    assert form(after) == form(expand(folder, from_scratch=True))
    assert by_ref(after)["Route team-b/b0"] is before["Route team-b/b0"]
    assert by_ref(after)["Route team-a/a0"] is not before["Route team-a/a0"]
    assert by_ref(after)["Route team-a/a0"].served_on("infra/edge") == ()


def test_the_served_snapshot_is_the_one_a_fresh_build_gives(folder: Path) -> None:
    assert build_snapshot([folder]).snapshot is not None
    write(folder / "team-b.yaml", *(http_route(f"b{i}", "team-b", f"/b{i}") for i in range(5)))
    built = build_snapshot([folder]).snapshot
    gatewayapi._LAST[0] = None
    fresh = build_snapshot([folder]).snapshot
    assert built is not None and fresh is not None and built.version == fresh.version


def shadow_warnings(folder: Path) -> list[str]:
    result = build_snapshot([folder])
    assert result.snapshot is not None
    return sorted(f"{issue.kind} {issue.name}" for issue in result.issues
                  if issue.severity == "warning" and "never matches" in issue.message)


def test_rules_shadowed_in_their_sections_are_found_as_routes_come_and_go(
        folder: Path) -> None:
    """On a Gateway with routes served on some listeners only, a rule is reported where it
    is shadowed in every section it is served on, reload after reload (each section's
    buckets are kept from one translation to the next)."""
    assert shadow_warnings(folder) == []
    # team-b's routes are served on both listeners: one on "web" alone does not shadow them
    write(folder / "team-c.yaml", http_route("c0", "team-c", "/b0", "web"))
    assert shadow_warnings(folder) == ["HTTPRoute team-c/c0"]  # b0 comes first, in both
    write(folder / "team-a.yaml", http_route("a0", "team-a", "/c1", "admin"),
          *(http_route(f"a{i}", "team-a", f"/a{i}", "web") for i in (1, 2)))
    write(folder / "team-c.yaml", http_route("c0", "team-c", "/b0", "web"),
          http_route("c1", "team-c", "/c1", "admin"))
    assert shadow_warnings(folder) == ["HTTPRoute team-c/c0", "HTTPRoute team-c/c1"]
    (folder / "team-b.yaml").unlink()
    assert shadow_warnings(folder) == ["HTTPRoute team-c/c1"]


def test_routes_to_the_same_backend_share_their_converted_forward(folder: Path) -> None:
    """A conversion validates a repeated section once (``schema.shared_sections``, as a load
    does): 10,000 HTTPRoutes to one Service are one forward model, which translation and
    the IR's encoding then share too (per namespace; a rule equal to one of an earlier
    build may be that build's). One to another backend is its own."""
    write(folder / "team-b.yaml", *(http_route(f"b{i}", "team-b", f"/b{i}") for i in range(3)),
          http_route("b3", "team-b", "/b3", backend="gone"))
    routes = by_ref(expand(folder, from_scratch=True))
    forwards = [routes[f"Route team-{t}/{t}{i}"].spec.rules[0].forward
                for t in "ab" for i in range(3)]
    assert all(forward is forwards[0] for forward in forwards) and forwards[0] is not None
    assert routes["Route team-b/b3"].spec.rules[0].forward is not forwards[0]
    result = build_snapshot([folder])
    assert result.snapshot is not None
    [gateway] = result.snapshot.gateways
    actions = {rule.route: rule.action for rule in gateway.rules}
    assert actions["Route team-a/a0"] == actions["Route team-b/b2"] != actions["Route team-b/b3"]


# -- Ingresses: kept as the route objects are --------------------------------------------------
NATIVE_GATEWAY = {"apiVersion": "propylon.dev/v1", "kind": "Gateway",
                  "metadata": {"name": "ingress", "namespace": "infra"},
                  "spec": {"listeners": [{"name": "http", "port": 8090}], "routeSelector": {
                      "namespaces": ["*"],
                      "matchLabels": {"propylon.dev/ingress-class": "propylon"}}}}
HTTPS_LISTENER = {"name": "https", "port": 8443, "protocol": "HTTPS", "tls": {
    "certificates": [{"certFile": "/default.pem", "keyFile": "/default.key"}]}}


def ingress(name: str, namespace: str, *paths: str, backend: str = "api",
            tls: str | None = None, hosts: int = 1) -> dict[str, Any]:
    rules = [{"host": f"{name}-{h}.test", "http": {"paths": [
        {"path": path, "pathType": "Prefix", "backend": {"service": {
            "name": backend, "port": {"number": 80}}}} for path in paths]}}
        for h in range(hosts)]
    spec: dict[str, Any] = {"ingressClassName": "propylon", "rules": rules}
    if tls is not None:
        spec["tls"] = [{"hosts": [f"{name}-0.test"], "secretName": tls}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@pytest.fixture
def ingresses(folder: Path) -> Path:
    from tests.support.k8s_tls import self_signed, tls_secret

    write(folder / "2-ingress-gateway.yaml", NATIVE_GATEWAY)
    write(folder / "3-secret.yaml", tls_secret("web-tls", "back", self_signed("i0-0.test")))
    write(folder / "ingress-a.yaml", ingress("i0", "back", "/x", "/y", tls="web-tls"),
          ingress("i1", "back", "/z", hosts=2))
    write(folder / "ingress-b.yaml", *(ingress(f"j{i}", "back", f"/j{i}") for i in range(3)))
    return folder


@pytest.mark.parametrize("change", [
    pytest.param(lambda f: write(f / "ingress-b.yaml", *(ingress(f"j{i}", "back", f"/j{i}")
                                                         for i in range(4))),
                 id="an-ingress-added"),
    pytest.param(lambda f: write(f / "ingress-b.yaml", ingress("j0", "back", "/other"),
                                 ingress("j1", "back", "/j1", backend="gone")),
                 id="one-changed-one-removed-one-refers-to-nothing"),
    pytest.param(lambda f: write(f / "ingress-b.yaml", *(ingress(f"j{i}", "back", f"/j{i}")
                                                         for i in range(3)),
                                 ingress("j0", "back", "/dup")),
                 id="an-ingress-defined-twice"),
    pytest.param(lambda f: write(f / "team-b.yaml", *(http_route(f"b{i}", "team-b", f"/b{i}")
                                                      for i in range(2))),
                 id="an-httproute-removed"),
    pytest.param(lambda f: write(f / "1-service.yaml", SERVICE[0], {
        **SERVICE[1], "endpoints": [{"addresses": ["127.0.0.2"], "conditions": {"ready": True}}]},
        SERVICE[2]), id="endpoints-changed"),
])
def test_an_ingress_change_converts_as_from_scratch_and_keeps_the_others(
        ingresses: Path, change: Any) -> None:
    before = by_ref(expand(ingresses, from_scratch=True))
    assert before["Route back/ingress:i1:2"].spec.rules[0].forward is not None
    change(ingresses)
    kept = expand(ingresses)
    assert form(kept) == form(expand(ingresses, from_scratch=True))
    same = not kept.replaced
    after = by_ref(kept)
    for ref in ("Route back/ingress:i0", "Route back/ingress:i1", "Route back/ingress:i1:2"):
        assert (after[ref] is before[ref]) is same


def test_a_native_gateway_taking_an_ingress_certificate_is_seen_without_an_ingress_change(
        ingresses: Path) -> None:
    """An Ingress's certificates go to the native Gateways that select it with an HTTPS
    listener: a Gateway given one takes them, though the Ingress is kept as it was."""
    before = by_ref(expand(ingresses, from_scratch=True))
    native = {**NATIVE_GATEWAY, "spec": {**NATIVE_GATEWAY["spec"], "listeners": [
        *NATIVE_GATEWAY["spec"]["listeners"], HTTPS_LISTENER]}}
    write(ingresses / "2-ingress-gateway.yaml", native)
    kept = expand(ingresses)
    assert form(kept) == form(expand(ingresses, from_scratch=True))
    gateway = by_ref(kept)["Gateway infra/ingress"]
    https = next(lst for lst in gateway.spec.listeners if lst.name == "https")
    assert https.tls is not None and [c.cert_file for c in https.tls.certificates] == [
        "/default.pem", "Secret back/web-tls"]  # the listener's own, then the Ingress's
    assert by_ref(kept)["Route back/ingress:i0"] is before["Route back/ingress:i0"]


# -- Gateways and Secrets: route objects read only the Gateways' listeners ---------------------
def https_gateway(**spec: Any) -> dict[str, Any]:
    listeners = [*GATEWAY["spec"]["listeners"],
                 {"name": "secure", "port": 8443, "protocol": "HTTPS",
                  "tls": {"mode": "Terminate", "certificateRefs": [{"name": "edge-tls"}]},
                  "allowedRoutes": {"namespaces": {"from": "All"}}}]
    return {**GATEWAY, "spec": {**GATEWAY["spec"], "listeners": listeners, **spec}}


@pytest.fixture
def secured(folder: Path) -> Path:
    from tests.support.k8s_tls import self_signed, tls_secret

    write(folder / "0-gateway.yaml", https_gateway())
    write(folder / "4-secret.yaml", tls_secret("edge-tls", "infra", self_signed("edge.test")))
    return folder


def certificate_of(expansion: Expansion) -> str:
    gateway = by_ref(expansion)["Gateway infra/edge"]
    [listener] = [lst for lst in gateway.spec.listeners if lst.name == "secure"]
    assert listener.tls is not None
    [certificate] = listener.tls.certificates
    return certificate._inline.certificate_pem  # type: ignore[attr-defined,no-any-return]


def test_a_rotated_certificate_keeps_the_routes_and_serves_the_new_one(secured: Path) -> None:
    """A Secret renewed (cert-manager) changes the certificate its listener serves, not
    what any route attaches to: the routes are kept, the Gateway is made again."""
    from tests.support.k8s_tls import self_signed, tls_secret

    before = expand(secured, from_scratch=True)
    write(secured / "4-secret.yaml", tls_secret("edge-tls", "infra", self_signed("edge.test")))
    after = expand(secured)
    assert certificate_of(after) != certificate_of(before)
    assert by_ref(after)["Route team-a/a0"] is by_ref(before)["Route team-a/a0"]
    assert by_ref(after)["Gateway infra/edge"] is not by_ref(before)["Gateway infra/edge"]
    assert form(after) == form(expand(secured, from_scratch=True))
    assert certificate_of(after) == certificate_of(expand(secured))


def with_listener(name: str, port: int, admitted: str) -> dict[str, Any]:
    gateway = https_gateway()
    gateway["spec"]["listeners"].append({"name": name, "port": port, "protocol": "HTTP",
                                         "allowedRoutes": {"namespaces": {"from": admitted}}})
    return gateway


@pytest.mark.parametrize(("change", "a0_kept", "b0_kept"), [
    pytest.param(lambda f: write(f / "0-gateway.yaml", https_gateway(
        addresses=[{"type": "IPAddress", "value": "127.0.0.1"}])), True, True,
                 id="an-address-given"),
    pytest.param(lambda f: write(f / "4-secret.yaml", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "edge-tls",
                                                          "namespace": "infra"},
        "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}), True, True,
                 id="its-secret-unusable-its-listener-gone"),  # a0 on web, b0 on all there
    pytest.param(lambda f: write(f / "0-gateway.yaml", with_listener("extra", 8090, "All")),
                 True, True, id="a-listener-added-for-every-namespace"),
    # b0 attached to every listener but this one now: served on some only
    pytest.param(lambda f: write(f / "0-gateway.yaml", with_listener("inner", 8091, "Same")),
                 True, False, id="a-listener-added-for-its-namespace-only"),
    pytest.param(lambda f: write(f / "0-gateway.yaml", https_gateway(listeners=[
        {**GATEWAY["spec"]["listeners"][0], "hostname": "*.example.com"}])), False, False,
                 id="a-listener-hostname-set"),
])
def test_a_gateway_change_converts_a_route_object_only_when_it_attaches_otherwise(
        secured: Path, change: Any, a0_kept: bool, b0_kept: bool) -> None:
    """A route object is kept while each of its parentRefs attaches as it did and it is
    served on the same listener sections: a listener added to a Gateway of 10,000
    HTTPRoutes converted every one of them again (4 s of the supervisor's CPU)."""
    prior = by_ref(expand(secured, from_scratch=True))
    change(secured)
    after = expand(secured)
    assert form(after) == form(expand(secured, from_scratch=True))
    kept = by_ref(after)
    assert (kept["Route team-a/a0"] is prior["Route team-a/a0"]) is a0_kept
    assert (kept["Route team-b/b0"] is prior["Route team-b/b0"]) is b0_kept


# -- ReferenceGrants and Namespaces: a kept object asks its questions again ---------------
def grant(*namespaces: str, name: str = "from-teams", to: Any = None) -> dict[str, Any]:
    return {**SERVICE[2], "metadata": {"name": name, "namespace": "back"}, "spec": {
        "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": ns}
                 for ns in namespaces],
        "to": to if to is not None else [{"group": "", "kind": "Service"}]}}


@pytest.mark.parametrize(("change", "converted"), [
    pytest.param(lambda f: write(f / "1-service.yaml", *SERVICE[:2], grant("team-a")),
                 {"team-b"}, id="a-namespace-no-longer-granted"),
    pytest.param(lambda f: write(f / "1-service.yaml", *SERVICE,
                                 grant("team-c", name="other")),
                 set(), id="another-grant-added"),
    pytest.param(lambda f: write(f / "1-service.yaml", *SERVICE[:2],
                                 grant("team-a", "team-b", to=[{"group": "", "kind": 7}])),
                 {"team-a", "team-b"}, id="the-grant-unreadable"),
])
def test_a_reference_grant_change_converts_the_objects_whose_answers_change(
        folder: Path, change: Any, converted: set[str]) -> None:
    """A kept route object asks the ReferenceGrant questions its conversion asked again
    (``BackendResolver.grants_hold``): only those answered otherwise now are converted again
    (every route object of the configuration was, for any ReferenceGrant change)."""
    before = by_ref(expand(folder, from_scratch=True))
    change(folder)
    after = expand(folder)
    assert form(after) == form(expand(folder, from_scratch=True))
    kept = by_ref(after)
    for team, prefix in (("team-a", "a"), ("team-b", "b")):
        for i in range(3):
            ref = f"Route {team}/{prefix}{i}"
            assert (kept[ref] is before[ref]) is (team not in converted), ref


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}}


@pytest.fixture
def selecting(folder: Path) -> Path:
    listeners = [{**GATEWAY["spec"]["listeners"][0], "allowedRoutes": {"namespaces": {
        "from": "Selector", "selector": {"matchLabels": {"shared-gateway": "yes"}}}}}]
    write(folder / "0-gateway.yaml", {**GATEWAY, "spec": {**GATEWAY["spec"],
                                                          "listeners": listeners}})
    write(folder / "2-namespaces.yaml", namespace("team-a", **{"shared-gateway": "yes"}),
          namespace("team-b", **{"shared-gateway": "yes"}))
    return folder


@pytest.mark.parametrize(("change", "converted"), [
    pytest.param(lambda f: write(f / "2-namespaces.yaml",
                                 namespace("team-a", **{"shared-gateway": "yes"}),
                                 namespace("team-b", **{"shared-gateway": "no"})),
                 {"team-b"}, id="a-namespace-relabelled"),
    pytest.param(lambda f: write(f / "2-namespaces.yaml",
                                 namespace("team-a", **{"shared-gateway": "yes"}),
                                 namespace("team-b", **{"shared-gateway": "yes"}),
                                 namespace("team-c")),
                 set(), id="a-namespace-added"),
])
def test_a_namespace_change_converts_the_route_objects_of_that_namespace(
        selecting: Path, change: Any, converted: set[str]) -> None:
    """A listener selecting namespaces by label reads a route object's own namespace's
    labels: a Namespace changed converts the route objects of that namespace only."""
    before = by_ref(expand(selecting, from_scratch=True))
    assert before["Route team-b/b0"].spec.rules  # attached through the selector
    change(selecting)
    after = expand(selecting)
    assert form(after) == form(expand(selecting, from_scratch=True))
    kept = by_ref(after)
    for team, prefix in (("team-a", "a"), ("team-b", "b")):
        ref = f"Route {team}/{prefix}1"
        assert (kept.get(ref) is before[ref]) is (team not in converted), ref


def test_a_listener_added_translates_only_the_routes_converted_again(
        secured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Gateway's listener sections changed (a listener added), its routes' rules did
    not: translation keeps the Routes that are the same objects (``memo.gateway_view`` reads
    only whether the Gateway has sections), and the snapshot is the one a fresh build
    gives."""
    from propylon.translate import gateway as gateway_step
    from propylon.translate import memo, shadows

    assert build_snapshot([secured]).snapshot is not None
    translated: list[str] = []
    flatten = gateway_step.flatten_route
    monkeypatch.setattr(gateway_step, "flatten_route",
                        lambda ctx, route: translated.append(route.key) or flatten(ctx, route))
    write(secured / "0-gateway.yaml", with_listener("inner", 8091, "Same"))
    built = build_snapshot([secured]).snapshot
    assert sorted(translated) == ["team-b/b0", "team-b/b1", "team-b/b2"]  # served otherwise
    gatewayapi._LAST[0] = None
    memo._MEMOS.clear()
    shadows._LAST.clear()
    fresh = build_snapshot([secured]).snapshot
    assert built is not None and fresh is not None and built.version == fresh.version
    assert built == fresh
