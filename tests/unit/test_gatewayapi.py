"""Gateway API and Ingress conversion (``config/gatewayapi.py``) and the statuses translation
gives the objects: attachment, hostnames, references, GRPCRoute, Ingress classes."""

from __future__ import annotations

import textwrap

import pytest

from propylon.config import Route, load_text
from propylon.config.gatewayapi import expand_kubernetes, intersect_hostnames
from propylon.config.gatewayapi_rules import GRPC_MATCH
from propylon.ir import ListenerSectionIR
from propylon.translate import translate_with_issues

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: propylon
  listeners:
    - {name: a, port: 8080, protocol: HTTP, hostname: "*.example.com",
       allowedRoutes: {namespaces: {from: All}}}
    - {name: b, port: 8081, protocol: HTTP, hostname: b.test}
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: svc, namespace: infra}
spec: {endpoints: [{address: 127.0.0.1, port: 9000}]}
"""


def route(parent: str = "{name: gw, namespace: infra}", hostnames: str = "[]",
          namespace: str = "infra", rules: str = "[{backendRefs: [{name: svc, port: 80}]}]",
          kind: str = "HTTPRoute") -> str:
    return textwrap.dedent(f"""
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: {kind}
    metadata: {{name: r, namespace: {namespace}}}
    spec:
      parentRefs: [{parent}]
      hostnames: {hostnames}
      rules: {rules}
    """)


def converted(text: str):
    loaded = load_text(text)
    assert loaded.ok, loaded.errors
    return expand_kubernetes(loaded.resources)


def status_of(text: str, kind: str, key: str):
    loaded = load_text(text)
    assert loaded.ok, loaded.errors
    statuses = translate_with_issues(loaded.resources).snapshot.statuses
    return next(s for s in statuses if (s.kind, s.key) == (kind, key))


@pytest.mark.parametrize(
    ("listener", "route_hosts", "expected"),
    [
        pytest.param(None, [], [], id="any-any"),
        pytest.param(None, ["a.test"], ["a.test"], id="route-only"),
        pytest.param("a.test", [], ["a.test"], id="listener-only"),
        pytest.param("*.example.com", ["x.example.com", "other.test"], ["x.example.com"],
                     id="wildcard-listener"),
        pytest.param("x.example.com", ["*.example.com"], ["x.example.com"],
                     id="wildcard-route"),
        pytest.param("a.test", ["b.test"], None, id="disjoint"),
    ],
)
def test_hostname_intersection(listener, route_hosts, expected) -> None:
    assert intersect_hostnames(listener, route_hosts) == expected


@pytest.mark.parametrize(
    ("parent", "hostnames", "namespace", "reason", "hosts", "sections"),
    [
        pytest.param("{name: gw, namespace: infra}", "[x.example.com]", "infra", "Accepted",
                     ["x.example.com"], ("a",), id="hostname-on-one-listener"),
        pytest.param("{name: gw, namespace: infra}", "[x.example.com, b.test]", "infra",
                     "Accepted", ["b.test", "x.example.com"], (), id="on-every-listener"),
        pytest.param("{name: gw, namespace: infra, sectionName: b}", "[]", "infra",
                     "Accepted", ["b.test"], ("b",), id="section-name"),
        pytest.param("{name: gw, namespace: infra, port: 8081}", "[]", "infra", "Accepted",
                     ["b.test"], ("b",), id="port"),
        pytest.param("{name: gw, namespace: infra, sectionName: zz}", "[]", "infra",
                     "NoMatchingParent", None, (), id="unknown-section"),
        pytest.param("{name: gw, namespace: infra, sectionName: a}", "[other.test]", "infra",
                     "NoMatchingListenerHostname", None, (), id="no-hostname-in-common"),
        pytest.param("{name: gw, namespace: infra, sectionName: b}", "[]", "team",
                     "NotAllowedByListeners", None, (), id="namespace-not-allowed"),
    ],
)
def test_attachment(parent, hostnames, namespace, reason, hosts, sections) -> None:
    """The route is served on the listeners it attaches to only (``RuleIR.sections``)."""
    text = GATEWAY + route(parent, hostnames, namespace)
    status = status_of(text, "HTTPRoute", f"{namespace}/r")
    assert any(f"Accepted={reason == 'Accepted'} {reason}" in line for line in status.reasons)
    routes = [r for r in converted(text).resources if isinstance(r, Route)]
    if hosts is None:
        assert routes == []
    else:
        assert routes[0].spec.hostnames == hosts
    loaded = load_text(text)
    [gateway] = translate_with_issues(loaded.resources).snapshot.gateways
    assert [rule.sections for rule in gateway.rules] == ([sections] if hosts else [])
    # listener sections only where some route is served on some listeners only
    assert [lst.sections for lst in gateway.listeners] == (
        [(ListenerSectionIR("a", "*.example.com"),), (ListenerSectionIR("b", "b.test"),)]
        if sections else [(), ()])


def test_routes_on_different_listeners_do_not_shadow_each_other() -> None:
    """Rules of the same hostnames and paths shadow each other only where both are served."""
    text = GATEWAY.replace('hostname: b.test', 'hostname: "*.example.com"') + "".join(
        route(f"{{name: gw, namespace: infra, sectionName: {section}}}", "[x.example.com]")
        .replace("name: r,", f"name: {name},")
        for name, section in [("r1", "a"), ("r2", "b"), ("r3", "b")])
    loaded = load_text(text)
    warnings = [str(issue) for issue in translate_with_issues(loaded.resources).issues
                if issue.severity == "warning"]
    assert len(warnings) == 1 and "HTTPRoute infra/r3" in warnings[0], warnings
    assert "Route infra/r2 rule #0 takes every request it matches" in warnings[0]


@pytest.mark.parametrize(
    ("match", "modifier", "expected"),
    [
        pytest.param("{path: {type: PathPrefix, value: /old}}",
                     "{type: ReplacePrefixMatch, replacePrefixMatch: /new}",
                     {"prefix": "/new"}, id="replace-prefix-match"),
        pytest.param("{path: {type: PathPrefix, value: /old}}",
                     "{type: ReplaceFullPath, replaceFullPath: /all}",
                     {"path": "/all"}, id="replace-full-path"),
        pytest.param("{path: {type: Exact, value: /old}}",
                     "{type: ReplacePrefixMatch, replacePrefixMatch: /new}",
                     None, id="prefix-needs-path-prefix-matches"),
    ],
)
def test_request_redirect_path(match, modifier, expected) -> None:
    rules = (f"[{{matches: [{match}], filters: [{{type: RequestRedirect, "
             f"requestRedirect: {{hostname: example.org, path: {modifier}}}}}]}}]")
    expansion = converted(GATEWAY + route(rules=rules))
    rule = next(r for r in expansion.resources if isinstance(r, Route)).spec.rules[0]
    if expected is None:
        assert rule.redirect is None and rule.direct_response.status == 500
        assert any("ReplacePrefixMatch needs PathPrefix" in i.message
                   for i in expansion.issues), expansion.issues
        return
    assert rule.redirect.host == "example.org"
    assert {k: v for k, v in (("path", rule.redirect.path), ("prefix", rule.redirect.prefix))
            if v is not None} == expected


def test_a_native_redirect_takes_a_path_or_a_prefix_not_both() -> None:
    loaded = load_text("""
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r}
spec:
  rules: [{redirect: {path: /a, prefix: /b}}]
""")
    assert any("path and prefix exclude each other" in e.message
               for e in [*loaded.errors, *translate_with_issues(loaded.resources).issues])


def test_an_unresolved_backend_of_a_weighted_rule_keeps_its_share() -> None:
    rules = ("[{backendRefs: [{name: svc, port: 80, weight: 3}, "
             "{name: missing, port: 80, weight: 1}]}]")
    text = GATEWAY + route(rules=rules)
    rule = next(r for r in converted(text).resources if isinstance(r, Route)).spec.rules[0]
    assert [(b.upstream, b.weight, b.unresolved) for b in rule.forward.backends] == [
        ("infra/svc", 3, False), ("unresolved", 1, True)]
    forward = next(r for r in translate_with_issues(load_text(text).resources).snapshot
                   .gateways[0].rules if r.route == "Route infra/r").action
    assert [(b.upstream, b.weight) for b in forward.backends] == [("infra/svc", 3)]
    assert forward.unresolved_weight == 1
    assert any("ResolvedRefs=False BackendNotFound" in line
               for line in status_of(text, "HTTPRoute", "infra/r").reasons)


def test_a_rule_whose_backends_all_fail_to_resolve_answers_500() -> None:
    rules = "[{backendRefs: [{name: missing, port: 80}, {name: gone, port: 80}]}]"
    rule = next(r for r in converted(GATEWAY + route(rules=rules)).resources
                if isinstance(r, Route)).spec.rules[0]
    assert rule.forward is None and rule.direct_response.status == 500


NAMESPACES = """
---
apiVersion: v1
kind: Namespace
metadata: {name: team, labels: {shared-gateway: "true", env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {env: dev}}
"""


@pytest.mark.parametrize(
    ("selector", "admitted"),
    [
        pytest.param("{matchLabels: {shared-gateway: 'true'}}", {"team"}, id="match-labels"),
        pytest.param("{matchExpressions: [{key: env, operator: In, values: [prod, dev]}]}",
                     {"team", "other"}, id="in"),
        pytest.param("{matchExpressions: [{key: env, operator: NotIn, values: [dev]}]}",
                     {"team", "infra"}, id="not-in"),
        pytest.param("{matchExpressions: [{key: env, operator: DoesNotExist}]}", {"infra"},
                     id="does-not-exist"),
        pytest.param("{matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, "
                     "values: [other]}]}", {"other"}, id="the-name-label"),
        pytest.param("{}", {"team", "infra", "other"}, id="empty-selects-every-given"),
    ],
)
def test_allowed_routes_namespace_selector(selector, admitted) -> None:
    gateway = GATEWAY.replace("allowedRoutes: {namespaces: {from: All}}",
                              f"allowedRoutes: {{namespaces: {{from: Selector, "
                              f"selector: {selector}}}}}")
    text = gateway + NAMESPACES + "".join(
        route("{name: gw, namespace: infra, sectionName: a}", namespace=ns).replace(
            "name: r,", f"name: r-{ns},") for ns in ("team", "infra", "other", "unlisted"))
    routes = {r.namespace for r in converted(text).resources if isinstance(r, Route)}
    assert routes == admitted
    status = status_of(text, "HTTPRoute", "unlisted/r-unlisted")
    assert any("Accepted=False NotAllowedByListeners" in line for line in status.reasons)


def test_namespace_selector_without_namespace_objects_says_so() -> None:
    gateway = GATEWAY.replace(
        "allowedRoutes: {namespaces: {from: All}}",
        "allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {a: b}}}}")
    text = gateway + route("{name: gw, namespace: infra, sectionName: a}", namespace="team")
    expansion = converted(text)
    assert not [r for r in expansion.resources if isinstance(r, Route)]
    assert any("needs the v1 Namespace objects in the inputs" in issue.message
               and issue.line is not None for issue in expansion.issues), expansion.issues


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        pytest.param("{matchLabels: {a: [b]}}", "must be a string", id="label-not-a-string"),
        pytest.param("{matchExpressions: [{key: a, operator: Near, values: [b]}]}",
                     "'Near' is not supported", id="unknown-operator"),
        pytest.param("{matchExpressions: [{key: a, operator: In}]}", "In and NotIn need values",
                     id="in-without-values"),
    ],
)
def test_a_bad_namespace_selector_refuses_its_listener(selector, message) -> None:
    gateway = GATEWAY.replace("allowedRoutes: {namespaces: {from: All}}",
                              f"allowedRoutes: {{namespaces: {{from: Selector, "
                              f"selector: {selector}}}}}")
    status = status_of(gateway + NAMESPACES + route(), "Gateway", "infra/gw")
    assert any("listener a: Accepted=False UnsupportedValue" in line and message in line
               for line in status.reasons), status.reasons


def test_gateway_of_another_class_and_its_routes_are_left_alone() -> None:
    text = GATEWAY.replace("gatewayClassName: propylon", "gatewayClassName: other") + route()
    expansion = converted(text)
    assert [r.kind for r in expansion.resources] == ["Upstream"]
    assert not expansion.findings.objects


def test_gateway_conditions_and_programmed() -> None:
    status = status_of(GATEWAY + route(), "Gateway", "infra/gw")
    assert status.state == "Accepted"
    assert "Programmed=True Programmed" in status.reasons
    assert "listener a: attachedRoutes=1" in status.reasons


def test_cross_namespace_backend_needs_a_reference_grant() -> None:
    service = """
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: web}
spec: {type: ExternalName, externalName: web.example.net, ports: [{port: 80}]}
"""
    grant = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: web}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: "", kind: Service}]
"""
    rules = "[{backendRefs: [{name: web, namespace: web, port: 80}]}]"
    denied = status_of(GATEWAY + route(rules=rules) + service, "HTTPRoute", "infra/r")
    assert any("ResolvedRefs=False RefNotPermitted" in line for line in denied.reasons)
    assert denied.state == "Invalid"
    text = GATEWAY + route(rules=rules) + service + grant
    allowed = status_of(text, "HTTPRoute", "infra/r")
    assert "ResolvedRefs=True ResolvedRefs" in allowed.reasons, allowed
    upstream = next(r for r in converted(text).resources if r.kind == "Upstream"
                    and r.key == "web/web-80")
    assert upstream.spec.endpoints[0].address == "web.example.net"
    assert upstream.spec.allowed_namespaces == ["infra"]


def test_grpc_route_matches() -> None:
    rules = """
      - matches: [{method: {service: shop.Cart, method: Add}}, {method: {service: shop.Cart}}]
        backendRefs: [{name: svc, port: 50051}]"""
    text = GATEWAY + route(kind="GRPCRoute", rules=rules)
    [grpc_route] = [r for r in converted(text).resources if isinstance(r, Route)]
    matches = grpc_route.spec.rules[0].matches
    if GRPC_MATCH:
        assert [m.grpc.model_dump(exclude_none=True) for m in matches] == [  # type: ignore[attr-defined]
            {"service": "shop.Cart", "method": "Add"}, {"service": "shop.Cart"}]
    else:  # until matches[].grpc exists: the same calls as paths
        assert [(m.path.kind, m.path.value, m.method) for m in matches] == [
            ("exact", "/shop.Cart/Add", "POST"), ("prefix", "/shop.Cart", "POST")]


@pytest.mark.parametrize(
    ("class_field", "served"),
    [
        pytest.param("ingressClassName: propylon", True, id="class-name"),
        pytest.param("ingressClassName: nginx", False, id="other-class"),
        pytest.param("", False, id="no-class"),
    ],
)
def test_ingress_class(class_field, served) -> None:
    text = f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: i, namespace: infra}}
spec:
  {class_field}
  rules: [{{host: a.test, http: {{paths: [{{path: /, pathType: Prefix,
          backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}]}}}}]
---""" + GATEWAY.split("---")[1]
    routes = [r for r in converted(text).resources if isinstance(r, Route)]
    assert bool(routes) is served


def test_ingress_legacy_annotation() -> None:
    text = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: i
  namespace: infra
  annotations: {kubernetes.io/ingress.class: propylon}
spec:
  defaultBackend: {service: {name: svc, port: {number: 80}}}
---""" + GATEWAY.split("---")[1]
    [ingress_route] = [r for r in converted(text).resources if isinstance(r, Route)]
    assert ingress_route.name == "ingress:i:default"
    assert ingress_route.metadata.labels["propylon.dev/ingress-class"] == "propylon"


def test_unknown_kubernetes_kind_is_an_error() -> None:
    loaded = load_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                       "metadata: {name: x}\n")
    assert "unknown kind 'NetworkPolicy'" in str(loaded.errors[0])


def test_a_name_clash_with_a_native_route_is_reported() -> None:
    native = """
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r, namespace: infra}
spec: {rules: [{directResponse: {status: 200}}]}
"""
    status = status_of(GATEWAY + route() + native, "HTTPRoute", "infra/r")
    assert any("already defined" in line for line in status.reasons)


def test_the_kubernetes_example_validates() -> None:
    from pathlib import Path

    from propylon.cli.problems import check_paths

    example = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
    check = check_paths([example])
    assert not check.failed, [str(p) for p in check.problems]
    assert check.built is not None and check.built.gateways == 2
