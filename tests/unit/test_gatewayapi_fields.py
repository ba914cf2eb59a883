"""Kubernetes objects with a field of the wrong type (the crash classes the configuration fuzz
target found): each gives a located issue naming the field and a status, never an exception.
The reading helpers themselves are in ``config/k8s_fields.py``."""

from __future__ import annotations

import textwrap

import pytest

from propylon.config import load_text
from propylon.config.gatewayapi import expand_kubernetes
from propylon.config.k8s_fields import FieldError, choice, entries, int_or_text, integer, text
from propylon.translate import translate_with_issues

FILE = "k8s.yaml"


def gateway(listener: str = "{name: web, port: 8080, protocol: HTTP}", spec: str = "") -> str:
    return textwrap.dedent(f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {{name: gw, namespace: infra}}
    spec:
      gatewayClassName: propylon
      listeners: [{listener}]
      {spec}
    """)


def http_route(rules: str = "[{backendRefs: [{name: svc, port: 80}]}]", spec: str = "") -> str:
    return textwrap.dedent(f"""
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: r, namespace: infra}}
    spec:
      parentRefs: [{{name: gw}}]
      rules: {rules}
      {spec}
    """)


def service(spec: str = "{ports: [{name: http, port: 80, targetPort: 8000}]}",
            endpoints: str = "[{addresses: [127.0.0.1]}]", namespace: str = "infra") -> str:
    return textwrap.dedent(f"""
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: svc, namespace: {namespace}}}
    spec: {spec}
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {{name: svc-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: svc}}}}
    addressType: IPv4
    ports: [{{name: http, port: 8000}}]
    endpoints: {endpoints}
    """)


def ingress(rules: str) -> str:
    return textwrap.dedent(f"""
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {{name: i, namespace: infra}}
    spec:
      ingressClassName: propylon
      rules: {rules}
    """) + service()


CASES = [
    # a mapping where a string is looked up in a table: "unhashable type: 'dict'"
    pytest.param(gateway() + http_route("[{matches: [{path: {type: {a: 1}, value: /}}], "
                                        "backendRefs: [{name: svc, port: 80}]}]") + service(),
                 "HTTPRoute", "spec.rules[0].matches[0].path.type", "must be a string",
                 "Accepted", id="path-type-mapping"),
    pytest.param(gateway() + http_route("[{matches: [{headers: [{type: [x], name: a}]}], "
                                        "backendRefs: [{name: svc, port: 80}]}]") + service(),
                 "HTTPRoute", "spec.rules[0].matches[0].headers[0].type", "must be a string",
                 "Accepted", id="header-match-type-list"),
    pytest.param(gateway() + http_route("[{matches: [{path: {type: Nope}}], "
                                        "backendRefs: [{name: svc, port: 80}]}]") + service(),
                 "HTTPRoute", "spec.rules[0].matches[0].path.type", "'Nope' is not supported",
                 "Accepted", id="path-type-unknown"),
    # a scalar where a list is iterated: "'int' object is not iterable"
    pytest.param(gateway() + http_route("[{filters: 5, backendRefs: [{name: svc}]}]") +
                 service(), "HTTPRoute", "spec.rules[0].filters", "must be a list",
                 "Accepted", id="filters-integer"),
    pytest.param(gateway() + http_route(spec="hostnames: {a: b}") + service(),
                 "HTTPRoute", "spec.hostnames", "must be a list", "Invalid",
                 id="hostnames-mapping"),
    pytest.param(gateway() + http_route(spec="hostnames: [{a: b}]") + service(),
                 "HTTPRoute", "spec.hostnames[0]", "must be a string", "Invalid",
                 id="hostname-mapping"),
    pytest.param(gateway() + http_route("7") + service(),
                 "HTTPRoute", "spec.rules", "must be a list", "Invalid", id="rules-integer"),
    pytest.param(gateway() + http_route().replace("[{name: gw}]", "[{name: {gw: 1}}]") +
                 service(), "HTTPRoute", "spec.parentRefs[0].name", "must be a string",
                 "Invalid", id="parent-name-mapping"),
    # a mapping where a mapping's .get is called on a list or a string
    pytest.param(gateway() + http_route(
        "[{filters: [{type: RequestRedirect, requestRedirect: [301]}]}]"),
        "HTTPRoute", "spec.rules[0].filters[0].requestRedirect", "must be a mapping",
        "Accepted", id="redirect-list"),
    pytest.param(gateway() + http_route(
        "[{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: 3}}],"
        " backendRefs: [{name: svc}]}]") + service(),
        "HTTPRoute", "spec.rules[0].filters[0].requestHeaderModifier.remove", "must be a list",
        "Accepted", id="header-remove-integer"),
    # arithmetic on what is not a number
    pytest.param(gateway() + http_route(
        "[{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80},"
        " fraction: {numerator: x}}}], backendRefs: [{name: svc, port: 80}]}]") + service(),
        "HTTPRoute", "spec.rules[0].filters[0].requestMirror.fraction.numerator",
        "must be an integer", "Accepted", id="mirror-numerator-string"),
    pytest.param(gateway() + http_route(
        "[{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80},"
        " fraction: {numerator: 1, denominator: 0}}}], backendRefs: [{name: svc}]}]") +
        service(), "HTTPRoute", "spec.rules[0].filters[0].requestMirror.fraction.denominator",
        "must be at least 1", "Accepted", id="mirror-denominator-zero"),
    pytest.param(gateway() + http_route("[{backendRefs: [{name: svc, port: 80, weight: x}]}]") +
                 service(), "HTTPRoute", "spec.rules[0].backendRefs[0].weight",
                 "must be an integer", "Accepted", id="weight-string"),
    pytest.param(gateway() + http_route("[{backendRefs: [{name: svc, port: {n: 80}}]}]") +
                 service(), "HTTPRoute", "spec.rules[0].backendRefs[0].port",
                 "must be an integer", "Accepted", id="backend-port-mapping"),
    # Gateways: int() of what is not a number, .get on a list
    pytest.param(gateway("{name: web, port: http, protocol: HTTP}"), "Gateway",
                 "spec.listeners[0].port", "must be an integer", "Invalid",
                 id="listener-port-string"),
    pytest.param(gateway("{name: web, port: 8080, protocol: HTTP, "
                         "allowedRoutes: {namespaces: [All]}}"), "Gateway",
                 "spec.listeners[0].allowedRoutes.namespaces", "must be a mapping", "Invalid",
                 id="allowed-namespaces-list"),
    pytest.param(gateway("{name: web, port: 8080, protocol: HTTP, "
                         "allowedRoutes: {kinds: kind}}"), "Gateway",
                 "spec.listeners[0].allowedRoutes.kinds", "must be a list", "Invalid",
                 id="allowed-kinds-string"),
    pytest.param(gateway(spec="addresses: [{value: {a: 1}}]"), "Gateway",
                 "spec.addresses[0].value", "must be a string", "Invalid",
                 id="address-mapping"),
    pytest.param(gateway().replace("listeners: [", "listeners: 3 #["), "Gateway",
                 "spec.listeners", "must be a list", "Invalid", id="listeners-integer"),
    # objects a reference is resolved with: the reference is unresolved, naming the field
    pytest.param(gateway() + http_route() + service(spec="{ports: 80}"), "HTTPRoute",
                 "spec.rules[0].backendRefs[0]", "Service infra/svc: spec.ports: must be a list",
                 "Invalid", id="service-ports-integer"),
    pytest.param(gateway() + http_route() + service(endpoints="[{addresses: {a: 1}}]"),
                 "HTTPRoute", "spec.rules[0].backendRefs[0]",
                 "EndpointSlice infra/svc-1: endpoints[0].addresses: must be a list", "Invalid",
                 id="slice-addresses-mapping"),
    pytest.param(gateway("{name: web, port: 8080, protocol: HTTP, "
                         "allowedRoutes: {namespaces: {from: All}}}") +
                 http_route("[{backendRefs: [{name: svc, namespace: web, port: 80}]}]") +
                 service(namespace="web") + textwrap.dedent("""
                 ---
                 apiVersion: gateway.networking.k8s.io/v1beta1
                 kind: ReferenceGrant
                 metadata: {name: g, namespace: web}
                 spec: {from: everyone, to: [{kind: Service}]}
                 """), "HTTPRoute", "spec.rules[0].backendRefs[0]",
                 "ReferenceGrant web/g: spec.from: must be a list", "Invalid",
                 id="grant-from-string"),
    # Ingress: the whole Ingress is refused
    pytest.param(ingress("[{http: {paths: [{path: /, pathType: {a: 1}, backend: {service: "
                         "{name: svc, port: {number: 80}}}}]}}]"), "Ingress",
                 "spec.rules[0].http.paths[0].pathType", "must be a string", "Invalid",
                 id="ingress-path-type-mapping"),
    pytest.param(ingress("[{http: [paths]}]"), "Ingress", "spec.rules[0].http",
                 "must be a mapping", "Invalid", id="ingress-http-list"),
    pytest.param(ingress("[{host: [a.test], http: {paths: []}}]"), "Ingress",
                 "spec.rules[0].host", "must be a string", "Invalid", id="ingress-host-list"),
    pytest.param(ingress("[{http: {paths: [{path: /, backend: {service: "
                         "{name: svc, port: {number: '80'}}}}]}}]"), "Ingress",
                 "spec.rules[0].http.paths[0].backend.service.port.number",
                 "must be an integer", "Invalid", id="ingress-port-number-string"),
]


@pytest.mark.parametrize(("text", "kind", "field", "message", "state"), CASES)
def test_a_field_of_the_wrong_type_is_a_located_issue(text, kind, field, message,
                                                      state) -> None:
    loaded = load_text(text, FILE)
    assert loaded.ok, loaded.errors
    translation = translate_with_issues(loaded.resources)
    issues = [i for i in translation.issues if i.kind == kind and i.field == field]
    assert issues, [str(i) for i in translation.issues]
    assert message in issues[0].message
    assert issues[0].file == FILE and issues[0].line is not None
    key = "infra/r" if kind == "HTTPRoute" else "infra/gw" if kind == "Gateway" else "infra/i"
    [status] = [s for s in translation.snapshot.statuses if (s.kind, s.key) == (kind, key)]
    assert status.state == state, status


def test_a_bad_rule_answers_500_and_the_others_are_served() -> None:
    rules = ("[{matches: [{path: {type: {a: 1}}}], backendRefs: [{name: svc, port: 80}]},"
             " {matches: [{path: {value: /ok}}], backendRefs: [{name: svc, port: 80}]}]")
    loaded = load_text(gateway() + http_route(rules) + service(), FILE)
    [route] = [r for r in expand_kubernetes(loaded.resources).resources if r.kind == "Route"]
    first, second = route.spec.rules  # type: ignore[attr-defined]
    assert first.direct_response is not None and first.direct_response.status == 500
    assert second.direct_response is None and second.forward is not None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param("apiVersion: {a: 1}\nkind: Route\nmetadata: {name: x}\n", "apiVersion",
                     id="api-version-mapping"),
        pytest.param("apiVersion: networking.k8s.io/v1\nkind: {name: edge}\n"
                     "metadata: {name: x}\n", "kind", id="kind-mapping"),
    ],
)
def test_identity_of_the_wrong_type_is_a_load_error(text, field) -> None:
    loaded = load_text(text, FILE)
    [error] = loaded.errors
    assert error.field == field and error.line is not None


@pytest.mark.parametrize(
    ("read", "value", "expected"),
    [
        pytest.param(text, "a", "a", id="text"),
        pytest.param(text, None, None, id="text-null"),
        pytest.param(integer, 3, 3, id="integer"),
        pytest.param(int_or_text, "http", "http", id="int-or-text-name"),
        pytest.param(int_or_text, 80, 80, id="int-or-text-number"),
    ],
)
def test_readers_give_the_value(read, value, expected) -> None:
    assert read({"f": value}, "f", "spec") == expected


@pytest.mark.parametrize(
    ("read", "value", "message"),
    [
        pytest.param(text, {"a": 1}, "must be a string, not a mapping {'a': 1}", id="text"),
        pytest.param(integer, True, "must be an integer, not a boolean True", id="boolean"),
        pytest.param(integer, 1.5, "must be an integer, not a number 1.5", id="float"),
        pytest.param(int_or_text, [80], "must be an integer, not a list [80]", id="list"),
        pytest.param(lambda raw, key, at: choice(raw, key, at, {"A": 1}, "A"), "B",
                     "'B' is not supported (one of A)", id="choice"),
        pytest.param(lambda raw, key, at: entries(raw, key, at), [1], "must be a mapping",
                     id="entries"),
    ],
)
def test_readers_name_the_field(read, value, message) -> None:
    with pytest.raises(FieldError) as caught:
        read({"f": value}, "f", "spec")
    assert caught.value.field.startswith("spec.f") and message in str(caught.value)
