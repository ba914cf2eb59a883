"""The names of converted Kubernetes objects: any name Kubernetes accepts is served under that
name, one Kubernetes refuses is contained as invalid.

Kubernetes names most objects as DNS subdomains (lower-case alphanumerics, ``-`` and ``.``,
at most 253: ``api.v1-route``), namespaces as DNS labels (no ``.``, at most 63) and Services
as RFC 1035 labels (a letter first, no ``.``, at most 63). A propylon.dev/v1 name is a DNS
label: the Route, Gateway and Upstream an object becomes keep the object's own name (or one
made from it: ``grpcroute:NAME``, ``ingress:NAME:2``, ``ingress:NAME:default``,
``SERVICE-PORT``) all the same, so its status, metrics, access log and ``propylon explain``
name it as the user wrote it, and no two objects' Routes share a name."""

from __future__ import annotations

import textwrap

import pytest

from propylon.admin.api import valid_gateway_name
from propylon.config import load_text
from propylon.config.gatewayapi import expand_kubernetes
from propylon.config.kubernetes import is_route_name, route_name
from propylon.translate import translate_with_issues

LONG = "orders." + "a" * 180 + ".v1-route"  # 196 characters, dots
assert len(LONG) == 196
SERVICE = "s" + "x" * 62  # the longest Service name Kubernetes allows (63)


def gateway(name: str = "edge") -> str:
    return textwrap.dedent(f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {{name: {name}, namespace: infra}}
    spec:
      gatewayClassName: propylon
      listeners: [{{name: http, port: 8080, protocol: HTTP,
                   allowedRoutes: {{namespaces: {{from: All}}}}}}]
    ---
    apiVersion: propylon.dev/v1
    kind: Upstream
    metadata: {{name: app, namespace: shop}}
    spec: {{endpoints: [{{address: 127.0.0.1, port: 9000}}]}}
    """)


def http_route(name: str, host: str, *, parent: str = "edge", namespace: str = "shop",
               kind: str = "HTTPRoute") -> str:
    return textwrap.dedent(f"""
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: {kind}
    metadata: {{name: "{name}", namespace: {namespace}}}
    spec:
      parentRefs: [{{name: "{parent}", namespace: infra}}]
      hostnames: [{host}]
      rules: [{{backendRefs: [{{group: propylon.dev, kind: Upstream, name: app}}]}}]
    """)


def translated(text: str):
    loaded = load_text(text)
    translation = translate_with_issues(loaded.resources, loaded.rejected)
    statuses = {f"{s.kind} {s.key}": s for s in translation.snapshot.statuses}
    rules = {rule.route: rule for g in translation.snapshot.gateways for rule in g.rules}
    return loaded, statuses, rules


@pytest.mark.parametrize("name", [
    pytest.param("api.v1-route", id="dotted"),
    pytest.param("shop.example.com", id="domain"),
    pytest.param("a" * 63 + "b", id="64-characters"),
    pytest.param(LONG, id="196-characters"),
    pytest.param("x" * 253, id="253-characters"),
    pytest.param("0.1", id="digits"),
])
def test_a_route_name_kubernetes_accepts_is_served_under_that_name(name) -> None:
    loaded, statuses, rules = translated(gateway() + http_route(name, "a.test"))
    assert loaded.ok, loaded.errors
    status = statuses[f"HTTPRoute shop/{name}"]
    assert status.state == "Accepted", status.reasons
    assert "parent Gateway infra/edge: Accepted=True Accepted" in status.reasons
    rule = rules[f"Route shop/{name}"]  # its name in metrics, access logs and explain
    assert not rule.replaced and rule.action.backends[0].upstream == "shop/app"


def test_a_grpc_route_with_a_dotted_name_is_served() -> None:
    _, statuses, rules = translated(
        gateway() + http_route("grpc.v1", "g.test", kind="GRPCRoute"))
    assert statuses["GRPCRoute shop/grpc.v1"].state == "Accepted"
    assert not rules["Route shop/grpcroute:grpc.v1"].replaced


def test_a_gateway_with_a_dotted_name_serves_its_routes() -> None:
    _, statuses, rules = translated(
        gateway("edge.example.com") + http_route("api.v1", "a.test", parent="edge.example.com"))
    assert statuses["Gateway infra/edge.example.com"].state == "Accepted", \
        statuses["Gateway infra/edge.example.com"].reasons
    assert statuses["HTTPRoute shop/api.v1"].state == "Accepted"
    assert not rules["Route shop/api.v1"].replaced


def test_the_longest_service_name_with_a_port_resolves() -> None:
    text = gateway() + textwrap.dedent(f"""
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: api.v1, namespace: shop}}
    spec:
      parentRefs: [{{name: edge, namespace: infra}}]
      rules: [{{backendRefs: [{{name: {SERVICE}, port: 8080}}]}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: {SERVICE}, namespace: shop}}
    spec: {{ports: [{{port: 8080, targetPort: 80}}]}}
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {{name: {SERVICE}.x1, namespace: shop,
               labels: {{kubernetes.io/service-name: {SERVICE}}}}}
    addressType: IPv4
    endpoints: [{{addresses: [127.0.0.1]}}]
    ports: [{{port: 80}}]
    """)
    loaded = load_text(text)
    snapshot = translate_with_issues(loaded.resources).snapshot
    status = next(s for s in snapshot.statuses if s.key == "shop/api.v1")
    assert status.state == "Accepted", status.reasons
    rule = next(r for r in snapshot.gateways[0].rules if r.route == "Route shop/api.v1")
    assert rule.action.backends[0].upstream == f"shop/{SERVICE}-8080"  # 68 characters
    upstream = next(u for u in snapshot.gateways[0].upstreams if u.key == f"shop/{SERVICE}-8080")
    assert [(e.address, e.port) for e in upstream.endpoints] == [("127.0.0.1", 80)]


def test_an_ingress_with_a_dotted_name_becomes_routes_of_its_name() -> None:
    text = textwrap.dedent("""
    apiVersion: propylon.dev/v1
    kind: Gateway
    metadata: {name: ingress, namespace: infra}
    spec:
      listeners: [{name: http, port: 8080}]
      routeSelector: {namespaces: ["*"], matchLabels: {propylon.dev/ingress-class: propylon}}
    ---
    apiVersion: propylon.dev/v1
    kind: Upstream
    metadata: {name: app, namespace: shop}
    spec: {endpoints: [{address: 127.0.0.1, port: 9000}]}
    ---
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {name: shop.example.com, namespace: shop}
    spec:
      ingressClassName: propylon
      defaultBackend: {service: {name: app, port: {number: 80}}}
      rules:
      - host: shop.example.com
        http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app}}}]}
      - host: api.example.com
        http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app}}}]}
    """)
    _, statuses, rules = translated(text)
    assert statuses["Ingress shop/shop.example.com"].state == "Accepted"
    for name in ("ingress:shop.example.com", "ingress:shop.example.com:2",
                 "ingress:shop.example.com:default"):
        assert not rules[f"Route shop/{name}"].replaced, name


@pytest.mark.parametrize(("name", "reason"), [
    pytest.param("Api.V1", 'invalid name "Api.V1"', id="upper-case"),
    pytest.param("api_v1", 'invalid name "api_v1"', id="underscore"),
    pytest.param("a" * 254, "invalid name", id="254-characters"),
    pytest.param("api..v1", 'invalid name "api..v1"', id="empty-label"),
    pytest.param("-api.v1", 'invalid name "-api.v1"', id="leading-dash"),
])
def test_a_route_name_kubernetes_refuses_is_contained(name, reason) -> None:
    loaded, statuses, rules = translated(gateway() + http_route(name, "a.test"))
    assert not loaded.ok
    status = statuses[f"HTTPRoute shop/{name}"]
    assert status.state == "Invalid"
    assert any("metadata.name: Accepted=False UnsupportedValue" in r and reason in r
               for r in status.reasons), status.reasons
    assert rules[f"Route shop/{name}"].replaced  # answers the invalid route response


def test_a_dotted_namespace_is_refused_as_kubernetes_refuses_it() -> None:
    """Namespaces are DNS labels: ``shop.prod`` is no namespace Kubernetes has."""
    loaded, statuses, rules = translated(
        gateway() + http_route("api.v1", "a.test", namespace="shop.prod"))
    assert any('invalid namespace "shop.prod"' in str(e) for e in loaded.errors), loaded.errors
    status = statuses["HTTPRoute shop.prod/api.v1"]
    assert status.state == "Invalid"
    assert rules["Route shop.prod/api.v1"].replaced


@pytest.mark.parametrize(("name", "ok"), [
    pytest.param("web", True, id="label"),
    pytest.param("web.v1", False, id="dotted"),
    pytest.param("1web", False, id="digit-first"),
    pytest.param("w" * 64, False, id="64-characters"),
])
def test_a_service_name_is_an_rfc_1035_label(name, ok) -> None:
    loaded = load_text(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, "
                       "namespace: shop}\nspec: {ports: [{port: 80}]}\n")
    assert loaded.ok is ok, loaded.errors


def test_listener_and_rule_names_kubernetes_accepts_are_kept() -> None:
    """A listener's and a rule's name are Gateway API SectionNames (DNS subdomains, up to
    253): dotted or long, the listener is served and the rule forwards, under those names
    (the ``listener`` and ``rule`` labels), even beside a rule named like a placeholder."""
    long = "w" * 70
    text = textwrap.dedent(f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {{name: edge, namespace: infra}}
    spec:
      gatewayClassName: propylon
      listeners:
      - {{name: http.web, port: 8080, protocol: HTTP, hostname: a.test,
         allowedRoutes: {{namespaces: {{from: All}}}}}}
      - {{name: {long}, port: 8080, protocol: HTTP, hostname: b.test,
         allowedRoutes: {{namespaces: {{from: All}}}}}}
    ---
    apiVersion: propylon.dev/v1
    kind: Upstream
    metadata: {{name: app, namespace: shop}}
    spec: {{endpoints: [{{address: 127.0.0.1, port: 9000}}]}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: api.v1, namespace: shop}}
    spec:
      parentRefs: [{{name: edge, namespace: infra, sectionName: http.web}}]
      rules:
      - name: orders.v1
        matches: [{{path: {{type: PathPrefix, value: /orders}}}}]
        backendRefs: [{{group: propylon.dev, kind: Upstream, name: app}}]
      - name: k8s-name-0
        backendRefs: [{{group: propylon.dev, kind: Upstream, name: app}}]
      - name: {"r" * 100}
        matches: [{{path: {{type: Exact, value: /long}}}}]
        backendRefs: [{{group: propylon.dev, kind: Upstream, name: app}}]
    """)
    loaded = load_text(text)
    snapshot = translate_with_issues(loaded.resources).snapshot
    statuses = {f"{s.kind} {s.key}": s for s in snapshot.statuses}
    assert statuses["Gateway infra/edge"].state == "Accepted", statuses["Gateway infra/edge"]
    route = statuses["HTTPRoute shop/api.v1"]
    assert route.state == "Accepted" and not any("PartiallyInvalid" in r
                                                 for r in route.reasons), route.reasons
    [listener] = snapshot.gateways[0].listeners
    assert listener.name == "http.web"
    assert [s.name for s in listener.sections] == ["http.web", long]
    rules = {r.name: r for r in snapshot.gateways[0].rules}
    assert sorted(rules) == ["k8s-name-0", "orders.v1", "r" * 100]
    assert all(r.sections == ("http.web",) and r.action.backends[0].upstream == "shop/app"
               for r in rules.values())


def test_converted_names_are_the_objects_own() -> None:
    """Conversion names each Route after its object: no two objects of one kind share one."""
    loaded = load_text(gateway() + http_route("a.b", "a.test") + http_route("a-b", "b.test"))
    names = sorted(r.name for r in expand_kubernetes(loaded.resources).resources
                   if r.kind == "Route")
    assert names == ["a-b", "a.b"]


@pytest.mark.parametrize(("name", "ok"), [
    pytest.param("edge", True, id="label"),
    pytest.param("edge.example.com", True, id="dotted"),
    pytest.param("Edge", False, id="upper-case"),
    pytest.param("edge/x", False, id="slash"),
    pytest.param("e" * 254, False, id="too-long"),
])
def test_the_control_plane_serves_a_gateway_of_any_kubernetes_name(name, ok) -> None:
    """A proxy of a Gateway API Gateway named ``edge.example.com`` asks for its IR at
    ``/v1/gateways/infra/edge.example.com/ir``."""
    assert valid_gateway_name(name) is ok


def policy(target: str, kind: str = "Route", section: str | None = None) -> str:
    section_field = f", sectionName: {section}" if section else ""
    return textwrap.dedent(f"""
    ---
    apiVersion: propylon.dev/v1
    kind: Policy
    metadata: {{name: p, namespace: {'infra' if kind == 'Gateway' else 'shop'}}}
    spec:
      targetRefs: [{{kind: {kind}, name: "{target}"{section_field}}}]
      headers: {{response: {{set: {{x-policy: p}}}}}}
    """)


@pytest.mark.parametrize("name", [
    pytest.param("api.v1-route", id="dotted"),
    pytest.param("a" * 63 + "b", id="64-characters"),
    pytest.param("x" * 253, id="253-characters"),
])
def test_a_policy_targets_a_route_of_a_kubernetes_name(name) -> None:
    loaded, statuses, rules = translated(
        gateway() + http_route(name, "a.test") + policy(name))
    assert loaded.ok, loaded.errors
    assert statuses["Policy shop/p"].state == "Accepted", statuses["Policy shop/p"].reasons
    assert [p.source for p in rules[f"Route shop/{name}"].policies] == [
        f"Policy shop/p -> Route shop/{name}"]


def test_a_policy_targets_a_gateway_and_a_rule_of_kubernetes_names() -> None:
    route = http_route("api.v1", "a.test", parent="edge.example.com").replace(
        "rules: [{", "rules: [{name: orders.v1, ")
    loaded, statuses, rules = translated(
        gateway("edge.example.com") + route + policy("edge.example.com", "Gateway")
        + policy("api.v1", section="orders.v1").replace("name: p,", "name: q,"))
    assert loaded.ok, loaded.errors
    assert statuses["Policy infra/p"].state == "Accepted", statuses["Policy infra/p"].reasons
    assert statuses["Policy shop/q"].state == "Accepted", statuses["Policy shop/q"].reasons
    assert [p.source for p in rules["Route shop/api.v1"].policies] == [
        "Policy shop/q -> Route shop/api.v1 rule orders.v1"]  # the rule's wins over the Gateway's


@pytest.mark.parametrize("name", [
    pytest.param("Team_Route", id="upper-case"),
    pytest.param("api..v1", id="empty-label"),
    pytest.param("-api", id="leading-dash"),
    pytest.param("x" * 254, id="254-characters"),
])
def test_a_policy_target_name_kubernetes_refuses_is_refused(name) -> None:
    loaded = load_text(gateway() + http_route("api", "a.test") + policy(name))
    [error] = loaded.errors
    assert error.field == "spec.targetRefs[0].name"
    assert error.message.startswith(f'invalid name "{name}": a target is named as Kubernetes '
                                    "names objects, a DNS subdomain"), error.message


def ingress(name: str, *hosts: str, default: bool = False) -> str:
    rules = "".join(f"""
      - host: {host}
        http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app}}}}}}]}}"""
                    for host in hosts)
    backend = "\n      defaultBackend: {service: {name: app, port: {number: 80}}}" \
        if default else ""
    return textwrap.dedent(f"""
    ---
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {{name: "{name}", namespace: shop}}
    spec:
      ingressClassName: propylon{backend}
      rules:""") + rules + "\n"


INGRESS_GATEWAY = textwrap.dedent("""
    ---
    apiVersion: propylon.dev/v1
    kind: Gateway
    metadata: {name: ingress, namespace: infra}
    spec:
      listeners: [{name: http, port: 8081}]
      routeSelector: {namespaces: ["*"], matchLabels: {propylon.dev/ingress-class: propylon}}
    """)


def test_route_objects_of_one_namespace_never_share_a_route_name() -> None:
    """An HTTPRoute and a GRPCRoute of one name, an HTTPRoute named as an Ingress's second
    host's Route once was (web-2), an Ingress of that name: each its own Route."""
    text = (gateway() + INGRESS_GATEWAY + http_route("api", "a.test")
            + http_route("api", "a.test", kind="GRPCRoute") + http_route("web", "w.test")
            + http_route("web-2", "w2.test") + http_route("web-default", "wd.test")
            + ingress("web", "x.test", "y.test", default=True) + ingress("web-2", "z.test"))
    loaded, statuses, rules = translated(text)
    assert loaded.ok, loaded.errors
    for ref, status in statuses.items():
        assert status.state == "Accepted", (ref, status.reasons)
    assert {ref for ref in rules if ref.startswith("Route ")} == {
        "Route shop/api", "Route shop/grpcroute:api", "Route shop/web", "Route shop/web-2",
        "Route shop/web-default", "Route shop/ingress:web", "Route shop/ingress:web:2",
        "Route shop/ingress:web:default", "Route shop/ingress:web-2"}


@pytest.mark.parametrize(("kind", "name", "part", "made"), [
    pytest.param("HTTPRoute", "api.v1", None, "api.v1", id="httproute"),
    pytest.param("GRPCRoute", "api.v1", None, "grpcroute:api.v1", id="grpcroute"),
    pytest.param("Ingress", "web", None, "ingress:web", id="ingress"),
    pytest.param("Ingress", "web", "2", "ingress:web:2", id="ingress-second-host"),
    pytest.param("Ingress", "web", "default", "ingress:web:default", id="ingress-default"),
])
def test_route_names(kind, name, part, made) -> None:
    assert route_name(kind, name, part) == made
    assert is_route_name(made) is (kind != "HTTPRoute")


@pytest.mark.parametrize("name", ["grpcroute:", "ingress:Web", "ingress:web:x", "route:web"])
def test_what_is_no_made_route_name(name) -> None:
    assert not is_route_name(name)


@pytest.mark.parametrize(("ref", "header"), [
    pytest.param("{kind: GRPCRoute, name: api}", "grpcroute:api", id="grpcroute"),
    pytest.param("{kind: HTTPRoute, name: api}", "api", id="httproute"),
    pytest.param("{kind: Route, name: api}", "api", id="route-by-its-name"),
    pytest.param("{kind: Ingress, name: web}", "ingress:web", id="ingress"),
])
def test_a_policy_targets_a_route_object_by_its_kind_and_name(ref, header) -> None:
    text = (gateway() + INGRESS_GATEWAY + http_route("api", "a.test")
            + http_route("api", "a.test", kind="GRPCRoute") + ingress("web", "x.test", "y.test")
            + policy("api").replace("{kind: Route, name: \"api\"}", ref))
    loaded, statuses, rules = translated(text)
    assert loaded.ok, loaded.errors
    assert statuses["Policy shop/p"].state == "Accepted", statuses["Policy shop/p"].reasons
    targeted = sorted(ref for ref, rule in rules.items() if rule.policies)
    expected = [f"Route shop/{header}"] if header != "ingress:web" else [
        "Route shop/ingress:web", "Route shop/ingress:web:2"]
    assert targeted == expected


@pytest.mark.parametrize(("ref", "reason"), [
    pytest.param("{kind: GRPCRoute, name: nothing}", "GRPCRoute shop/nothing not found",
                 id="missing"),
    pytest.param("{kind: Ingress, name: web, sectionName: a}",
                 "sectionName is not allowed for Ingress targets", id="ingress-section"),
    pytest.param("{kind: GRPCRoute, name: api, sectionName: a}",
                 'Route shop/grpcroute:api has no rule named "a"', id="missing-rule"),
])
def test_a_policy_target_of_a_route_object_that_is_not_there(ref, reason) -> None:
    text = (gateway() + INGRESS_GATEWAY + http_route("api", "a.test", kind="GRPCRoute")
            + ingress("web", "x.test") + policy("api").replace("{kind: Route, name: \"api\"}", ref))
    _, statuses, _ = translated(text)
    status = statuses["Policy shop/p"]
    assert status.state == "Invalid"
    assert any(reason in line for line in status.reasons), status.reasons


@pytest.mark.parametrize(("target", "routes"), [
    pytest.param("api", ["Route shop/grpcroute:api"], id="grpcroute"),
    pytest.param("web", ["Route shop/ingress:web"], id="ingress"),
    pytest.param("web-2", ["Route shop/ingress:web:2"], id="ingress-second-host"),
    pytest.param("web-default", ["Route shop/ingress:web:default"], id="ingress-default"),
])
def test_a_policy_written_for_a_former_route_name_still_attaches(target, routes) -> None:
    """A Policy written before GRPCRoutes' and Ingresses' Routes were named by kind targets
    {kind: Route, name: NAME} (NAME-2, NAME-default): it still attaches to that Route, with a
    warning saying how to write it, instead of turning Invalid and protecting nothing (an
    auth policy would have stopped applying on upgrade)."""
    text = (gateway() + INGRESS_GATEWAY + http_route("api", "a.test", kind="GRPCRoute")
            + ingress("web", "x.test", "y.test", default=True) + policy(target))
    loaded, statuses, rules = translated(text)
    assert loaded.ok, loaded.errors
    status = statuses["Policy shop/p"]
    assert status.state == "Accepted", status.reasons
    assert any("former name" in reason for reason in status.reasons), status.reasons
    assert sorted(ref for ref, rule in rules.items() if rule.policies) == routes


def test_a_rejected_policy_written_for_a_former_route_name_fails_that_route_closed() -> None:
    broken = policy("web").replace("x-policy: p", "x-policy: p}, bogus: {")  # unknown field
    text = (gateway() + INGRESS_GATEWAY + http_route("api", "a.test", kind="GRPCRoute")
            + ingress("web", "x.test") + broken)
    _, statuses, rules = translated(text)
    assert statuses["Policy shop/p"].state == "Invalid"
    assert rules["Route shop/ingress:web"].replaced
    assert not rules["Route shop/grpcroute:api"].replaced
