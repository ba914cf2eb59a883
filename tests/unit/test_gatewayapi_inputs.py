"""Kubernetes input as a cluster gives it, read from real files in process: ``kubectl get
... -o yaml`` Lists (their items, each at its own lines), an object with a bad name contained
as a native resource is (the rest serves), and a route's status per parentRef."""

from __future__ import annotations

import textwrap
from pathlib import Path

from propylon.config import load_paths
from propylon.controlplane.gitops import load_local
from propylon.standalone import build_snapshot

# what `kubectl get gateways,httproutes,services,endpointslices -A -o yaml` prints: one v1
# List, every object with the API server's metadata and status
DUMP = """\
apiVersion: v1
items:
- apiVersion: gateway.networking.k8s.io/v1
  kind: Gateway
  metadata:
    creationTimestamp: "2024-05-01T10:00:00Z"
    generation: 1
    name: edge
    namespace: infra
    resourceVersion: "5551"
    uid: 7c1d0a52-0000-4000-8000-000000000001
  spec:
    gatewayClassName: propylon
    listeners:
    - allowedRoutes: {namespaces: {from: All}}
      name: http
      port: 8080
      protocol: HTTP
  status:
    conditions:
    - {lastTransitionTime: "2024-05-01T10:00:00Z", message: "", observedGeneration: 1,
       reason: Accepted, status: "True", type: Accepted}
- apiVersion: gateway.networking.k8s.io/v1
  kind: HTTPRoute
  metadata:
    generation: 2
    name: web
    namespace: shop
    resourceVersion: "5560"
    uid: 7c1d0a52-0000-4000-8000-000000000002
  spec:
    parentRefs: [{name: edge, namespace: infra}]
    rules:
    - backendRefs: [{name: web, port: 80}]
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop, resourceVersion: "12345", uid: x-1}
  spec:
    clusterIP: 10.96.0.10
    ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
    type: ClusterIP
  status: {loadBalancer: {}}
- addressType: IPv4
  apiVersion: discovery.k8s.io/v1
  endpoints:
  - addresses: [127.0.0.1]
    conditions: {ready: true}
  kind: EndpointSlice
  metadata:
    labels: {kubernetes.io/service-name: web}
    name: web-x7k2p
    namespace: shop
    resourceVersion: "12399"
  ports: [{name: http, port: 8080, protocol: TCP}]
kind: List
metadata:
  resourceVersion: ""
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_a_kubectl_list_is_read_as_its_items(tmp_path: Path) -> None:
    _write(tmp_path / "dump.yaml", DUMP)
    loaded = load_paths([tmp_path])
    assert loaded.ok, [str(e) for e in loaded.errors]
    assert sorted(r.ref for r in loaded.resources) == [
        "EndpointSlice shop/web-x7k2p", "Gateway infra/edge", "HTTPRoute shop/web",
        "Service shop/web"]
    route = next(r for r in loaded.resources if r.kind == "HTTPRoute")
    assert route.source is not None and route.source.line == 23  # the item's own line
    built = build_snapshot([tmp_path], sealed=False)
    assert built.errors == [] and built.snapshot is not None
    [gateway] = built.snapshot.gateways
    [rule] = gateway.rules
    backend = rule.action.backends[0]  # type: ignore[union-attr]
    assert backend.upstream == "shop/web-80"
    status = {f"{s.kind} {s.key}": s for s in built.snapshot.statuses}
    assert status["HTTPRoute shop/web"].state == "Accepted", status["HTTPRoute shop/web"]


def test_an_item_of_a_list_is_reported_at_its_own_lines(tmp_path: Path) -> None:
    _write(tmp_path / "dump.yaml", """\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: fine, namespace: shop}
          spec: {ports: [{port: 80}]}
        - apiVersion: v1
          kind: Service
          metadata:
            namespace: shop
            name: 9-Bad
          spec: {ports: [{port: 80}]}
        - apiVersion: v1
          kind: Nothing
          metadata: {name: x}
        ---
        apiVersion: v1
        kind: List
        items: {}
        """)
    loaded = load_paths([tmp_path])
    problems = sorted((e.line, e.column, e.field, e.message[:40]) for e in loaded.errors)
    assert [p[:3] for p in problems] == [
        (12, 5, "metadata.name"), (15, 3, "kind"), (20, 1, "items")], problems
    assert [r.ref for r in loaded.resources] == ["Service shop/fine"]


def test_a_list_of_one_kind_as_the_api_server_answers_it(tmp_path: Path) -> None:
    """``kubectl get --raw`` gives an HTTPRouteList whose items leave out their kind."""
    _write(tmp_path / "routes.yaml", """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRouteList
        metadata: {resourceVersion: "77"}
        items:
        - metadata: {name: a, namespace: shop}
          spec: {parentRefs: [{name: edge}], rules: [{backendRefs: [{name: web, port: 80}]}]}
        - apiVersion: gateway.networking.k8s.io/v1
          kind: HTTPRoute
          metadata: {name: b, namespace: shop}
          spec: {}
        """)
    loaded = load_paths([tmp_path])
    assert loaded.ok, [str(e) for e in loaded.errors]
    assert sorted(r.ref for r in loaded.resources) == ["HTTPRoute shop/a", "HTTPRoute shop/b"]


def test_apply_reads_a_kubectl_list_as_its_items(tmp_path: Path) -> None:
    _write(tmp_path / "dump.yaml", DUMP)
    local, errors = load_local([tmp_path])
    assert errors == []
    assert [item.key for item in local] == [
        ("Gateway", "infra", "edge"), ("HTTPRoute", "shop", "web"), ("Service", "shop", "web"),
        ("EndpointSlice", "shop", "web-x7k2p")]
    assert all(item.model.kind == item.key[0] and item.model.name == item.key[2]
               for item in local)
    assert local[1].data["spec"]["parentRefs"] == [{"name": "edge", "namespace": "infra"}]


GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: eg, namespace: default}
spec:
  gatewayClassName: propylon
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: a, namespace: default}
spec: {endpoints: [{address: 127.0.0.1, port: 9000}]}
"""


def test_a_route_with_a_bad_name_is_contained_and_the_rest_serves(tmp_path: Path) -> None:
    _write(tmp_path / "infra.yaml", GATEWAY + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: team-a, namespace: default}
spec:
  parentRefs: [{name: eg}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{group: propylon.dev, kind: Upstream, name: a}]
""")
    _write(tmp_path / "team-b.yaml", """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: Team_B_Route, namespace: team-b}
spec:
  parentRefs: [{name: eg, namespace: default}]
  rules: [{backendRefs: [{name: x, port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: team-b-ingress, namespace: team-b, labels: {tier: [front]}}
spec: {ingressClassName: propylon}
""")
    loaded = load_paths([tmp_path])
    assert loaded.unattributed == []
    assert sorted(r.ref for r in loaded.rejected) == [
        "HTTPRoute team-b/Team_B_Route", "Ingress team-b/team-b-ingress"]
    built = build_snapshot([tmp_path], sealed=False)  # what `propylon run` and a reload do
    assert built.errors == [] and built.snapshot is not None
    [gateway] = built.snapshot.gateways
    # the bad-named route's own match (every path of any host: no hostnames, no matches)
    # answers the invalid route response; the Ingress has no rule to answer with
    assert [(rule.route, rule.replaced, rule.action) for rule in gateway.rules] == [
        ("Route default/team-a", False, gateway.rules[0].action),
        ("Route team-b/Team_B_Route", True, gateway.invalid_route_response)]
    status = {f"{s.kind} {s.key}": s for s in built.snapshot.statuses}
    assert status["HTTPRoute default/team-a"].state == "Accepted"
    bad = status["HTTPRoute team-b/Team_B_Route"]
    assert bad.state == "Invalid" and bad.gateways == ("default/eg",)
    assert any("Accepted=False UnsupportedValue: invalid name" in r for r in bad.reasons), bad
    assert "its rules answer the invalid route response until it is fixed" in bad.reasons
    ingress = status["Ingress team-b/team-b-ingress"]
    assert ingress.state == "Invalid"
    assert "left out: nothing of it can be served safely" in ingress.reasons, ingress
    assert any(w.startswith(f"{tmp_path / 'team-b.yaml'}:3:") and "Team_B_Route" in w
               for w in built.warnings), built.warnings


def test_a_kubernetes_object_defined_twice_is_contained(tmp_path: Path) -> None:
    route = """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: twice, namespace: default}
spec:
  parentRefs: [{name: eg}]
  rules: [{backendRefs: [{group: propylon.dev, kind: Upstream, name: a}]}]
"""
    _write(tmp_path / "a.yaml", GATEWAY + route)
    _write(tmp_path / "b.yaml", route)
    built = build_snapshot([tmp_path], sealed=False)
    assert built.errors == [] and built.snapshot is not None
    twice = [s for s in built.snapshot.statuses if s.key == "default/twice"]
    assert [(s.kind, s.state) for s in twice] == [("HTTPRoute", "Invalid")], twice
    assert "defined twice" in twice[0].reasons
    [gateway] = built.snapshot.gateways
    assert [(rule.route, rule.replaced) for rule in gateway.rules] == [
        ("Route default/twice", True)]


def test_each_parent_ref_has_its_own_status(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", GATEWAY + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs:
  - {name: eg, sectionName: http}
  - {name: eg, sectionName: https}
  - {name: eg, sectionName: http, port: 8080}
  rules: [{backendRefs: [{group: propylon.dev, kind: Upstream, name: a}]}]
""")
    built = build_snapshot([tmp_path], sealed=False)
    assert built.snapshot is not None
    status = {f"{s.kind} {s.key}": s for s in built.snapshot.statuses}
    route = status["HTTPRoute default/web"]
    assert route.state == "Accepted", route  # served through listener http
    assert "parent Gateway default/eg sectionName http: Accepted=True Accepted" in route.reasons
    assert ("parent Gateway default/eg sectionName http port 8080: Accepted=True Accepted"
            in route.reasons)
    assert any(r.startswith("parent Gateway default/eg sectionName https: Accepted=False "
                            "NoMatchingParent") for r in route.reasons), route
    assert "listener http: attachedRoutes=1" in status["Gateway default/eg"].reasons
    [gateway] = built.snapshot.gateways
    assert [rule.route for rule in gateway.rules] == ["Route default/web"]


def test_a_route_no_parent_accepts_is_invalid(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", GATEWAY + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: eg, sectionName: https}, {name: eg, port: 9999}]
  rules: [{backendRefs: [{group: propylon.dev, kind: Upstream, name: a}]}]
""")
    built = build_snapshot([tmp_path], sealed=False)
    assert built.snapshot is not None
    route = next(s for s in built.snapshot.statuses if s.key == "default/web")
    assert route.state == "Invalid"
    assert sum("NoMatchingParent" in r for r in route.reasons) == 2, route
