"""Kubernetes route objects whose converted Routes used to share a name, over the wire with a
real ``propylon run``: an HTTPRoute and a GRPCRoute both named ``api``, an HTTPRoute ``web``
next to an Ingress ``web`` (whose second host's Route was ``web-2``), an HTTPRoute ``web-2``
and an Ingress ``web-2``, all in one namespace, as Kubernetes allows. Each is served, under a
Route name no other object's can take (an HTTPRoute's own name; ``grpcroute:NAME``,
``ingress:NAME``, ``ingress:NAME:2``), and its status, metrics and ``propylon explain`` name
the right object. Policies target them by their Kubernetes kind and name."""

from __future__ import annotations

import json
from typing import Any

from tests.support.client import roundtrip
from tests.support.gateway import Gateway, metric_value, propylon
from tests.support.net import free_port

INGRESS_PORT = free_port()  # the propylon.dev/v1 Gateway serving the Ingresses
GRPC = {"content-type": "application/grpc", "te": "trailers"}
OBJECTS = ("HTTPRoute shop/api", "GRPCRoute shop/api", "HTTPRoute shop/web",
           "HTTPRoute shop/web-2", "Ingress shop/web", "Ingress shop/web-2")
ROUTES = {"Route shop/api", "Route shop/grpcroute:api", "Route shop/web", "Route shop/web-2",
          "Route shop/ingress:web", "Route shop/ingress:web:2", "Route shop/ingress:web-2"}


def _upstream(name: str, port: int) -> str:
    return f"""
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: {name}, namespace: shop}}
spec: {{endpoints: [{{address: 127.0.0.1, port: {port}}}]}}"""


def _http_route(name: str, host: str, path: str = "/") -> str:
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{{name: eg, namespace: infra}}]
  hostnames: [{host}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{group: propylon.dev, kind: Upstream, name: http-app}}]"""


def _ingress(name: str, *hosts: str) -> str:
    rules = "".join(f"""
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix,
         backend: {{service: {{name: ingress-app, port: {{number: 80}}}}}}}}""" for host in hosts)
    return f"""
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: shop}}
spec:
  ingressClassName: propylon
  rules:{rules}"""


def _gateways(port: int) -> str:
    """The Gateway API Gateway ``eg`` on ``port`` and the propylon.dev/v1 Gateway serving the
    Ingresses."""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: eg, namespace: infra}}
spec:
  gatewayClassName: propylon
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: http, port: {port}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
---
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: ingress, namespace: infra}}
spec:
  listeners: [{{name: http, port: {INGRESS_PORT}, address: 127.0.0.1}}]
  routeSelector: {{namespaces: ["*"], matchLabels: {{propylon.dev/ingress-class: propylon}}}}"""


def _grpc_route(name: str) -> str:
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{{name: eg, namespace: infra}}]
  hostnames: [api.test]
  rules:
  - matches: [{{method: {{service: shop.Cart}}}}]
    backendRefs: [{{group: propylon.dev, kind: Upstream, name: grpc-app}}]"""


def _config(port: int, ports: dict[str, int], policies: str = "") -> str:
    return _gateways(port) + _grpc_route("api") + "".join((
        _http_route("api", "api.test", "/http"), _http_route("web", "webh.test"),
        _http_route("web-2", "web2h.test"), _ingress("web", "web.test", "other.test"),
        _ingress("web-2", "web-two.test"), *(_upstream(n, p) for n, p in ports.items()),
        policies))


def _policy(name: str, kind: str, target: str, value: str) -> str:
    return f"""
---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {{name: {name}, namespace: shop}}
spec:
  targetRefs: [{{kind: {kind}, name: {target}}}]
  headers: {{response: {{set: {{x-policy: {value}}}}}}}"""


POLICIES = "".join((
    _policy("on-http-route", "Route", "api", "route-api"),  # the HTTPRoute's Route: its name
    _policy("on-grpc-route", "GRPCRoute", "api", "grpcroute-api"),
    _policy("on-ingress", "Ingress", "web", "ingress-web"),
    _policy("on-httproute-web", "HTTPRoute", "web", "httproute-web"),
))

# (port, method, target, host, headers) -> the upstream that answers
REQUESTS: list[tuple[str, str, str, str, dict[str, str], str]] = [
    ("gw", "GET", "/http/1", "api.test", {}, "http-app"),
    ("gw", "POST", "/shop.Cart/Add", "api.test", GRPC, "grpc-app"),
    ("gw", "GET", "/", "webh.test", {}, "http-app"),
    ("gw", "GET", "/", "web2h.test", {}, "http-app"),
    ("ingress", "GET", "/", "web.test", {}, "ingress-app"),
    ("ingress", "GET", "/", "other.test", {}, "ingress-app"),
    ("ingress", "GET", "/", "web-two.test", {}, "ingress-app"),
]


def _start(gateways, upstreams, policies: str = "") -> Gateway:
    ports = {name: upstreams(name).port for name in ("http-app", "grpc-app", "ingress-app")}
    return gateways(lambda port: _config(port, ports, policies))


def _answer(gw: Gateway, where: str, method: str, target: str, host: str,
            headers: dict[str, str]) -> Any:
    port = gw.port if where == "gw" else INGRESS_PORT
    return roundtrip(port, method, target, {"host": host, **headers}, b"\0\0\0\0\0"
                     if method == "POST" else b"")




def test_route_objects_of_one_name_are_all_served(gateways, upstreams) -> None:
    gw = _start(gateways, upstreams)
    for where, method, target, host, headers, upstream in REQUESTS:
        response = _answer(gw, where, method, target, host, headers)
        assert response.status == 200, (host, target, response)
        assert response.header("x-upstream") == upstream, (host, target, response)

    statuses = gw.statuses()
    for ref in OBJECTS:
        assert statuses[ref]["state"] == "Accepted", (ref, statuses[ref])
        assert not any("already defined" in r for r in statuses[ref]["reasons"]), statuses[ref]
    config = json.loads(gw.admin_get("/config")[1])
    assert {rule["route"] for g in config["gateways"] for rule in g["rules"]} == ROUTES

    metrics = gw.metrics()
    for route in ("shop/api", "shop/grpcroute:api", "shop/ingress:web", "shop/ingress:web:2"):
        assert metric_value(metrics, "propylon_requests_total", route=route, code="2xx") == 1, \
            route

    explained = propylon("explain", "POST", f"http://api.test:{gw.port}/shop.Cart/Add",
                          "-H", "content-type: application/grpc", "-c", str(gw.config_dir))
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "(Route shop/grpcroute:api, rule 0)" in explained.stdout, explained.stdout
    explained = propylon("explain", "GET", f"http://other.test:{INGRESS_PORT}/",
                          "-c", str(gw.config_dir))
    assert "(Route shop/ingress:web:2, rule 0)" in explained.stdout, explained.stdout

    validated = propylon("validate", str(gw.config_dir))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "already defined" not in validated.stdout + validated.stderr


def test_policies_target_converted_routes_by_kubernetes_kind_and_name(
    gateways, upstreams
) -> None:
    gw = _start(gateways, upstreams, POLICIES)
    expected = {"http-app": "route-api", "grpc-app": "grpcroute-api",
                "ingress-app": "ingress-web"}
    for where, method, target, host, headers, upstream in REQUESTS:
        response = _answer(gw, where, method, target, host, headers)
        assert response.status == 200, (host, target, response)
        policy = {"webh.test": "httproute-web", "web2h.test": None,
                  "web-two.test": None}.get(host, expected[upstream])
        assert response.header("x-policy") == policy, (host, target, response)

    statuses = gw.statuses()
    for name in ("on-http-route", "on-grpc-route", "on-ingress", "on-httproute-web"):
        status = statuses[f"Policy shop/{name}"]
        assert status["state"] == "Accepted", status
        assert status["gateways"], status
    explained = propylon("explain", "POST", f"http://api.test:{gw.port}/shop.Cart/Add",
                          "-H", "content-type: application/grpc", "-c", str(gw.config_dir))
    assert "Policy shop/on-grpc-route -> Route shop/grpcroute:api" in explained.stdout, \
        explained.stdout


def test_an_invalid_policy_on_a_grpc_route_fails_its_route_closed(gateways, upstreams) -> None:
    """A Policy that is rejected fails what it targets closed: its targetRef of kind
    GRPCRoute names the Route ``grpcroute:api``, which answers the invalid route response
    (to a gRPC call, as a Trailers-Only answer), and nothing else does."""
    bad = _policy("bad", "GRPCRoute", "api", "x").replace(
        "headers: {response: {set: {x-policy: x}}}", "ipFilter: {deny: [not-a-cidr]}")
    gw = _start(gateways, upstreams, bad)
    for where, method, target, host, headers, upstream in REQUESTS:
        response = _answer(gw, where, method, target, host, headers)
        if upstream == "grpc-app":  # a gRPC call gets the 500 as a Trailers-Only answer
            assert response.header("grpc-message") == "route unavailable", response
            assert response.header("x-upstream") is None, response
        else:
            assert response.status == 200, (host, target, response)
    status = gw.statuses()["GRPCRoute shop/api"]
    assert status["state"] == "Invalid", status
    assert any("Policy shop/bad targeting it is invalid" in r for r in status["reasons"]), status


def test_a_policy_written_for_a_former_route_name_still_protects_it(gateways, upstreams
                                                                    ) -> None:
    """A Policy written before GRPCRoutes' and Ingresses' Routes were named by kind targets
    ``{kind: Route, name: cart}`` (a GRPCRoute's Route) and ``front-2`` (an Ingress's second
    host's): no Route has those names now, so each still attaches to the Route that had it
    (an ipFilter denying everyone: 403, the gRPC call refused), with a warning in its
    status, instead of protecting nothing."""
    ports = {name: upstreams(name).port for name in ("grpc-app", "ingress-app")}
    deny = "ipFilter: {deny: [0.0.0.0/0]}"
    objects = "".join((
        _ingress("front", "front.test", "back.test"),
        *(_upstream(n, p) for n, p in ports.items()),
        _policy("old-grpc", "Route", "cart", "x").replace(
            "headers: {response: {set: {x-policy: x}}}", deny),
        _policy("old-ingress", "Route", "front-2", "x").replace(
            "headers: {response: {set: {x-policy: x}}}", deny)))
    gw = gateways(lambda port: _gateways(port) + _grpc_route("cart") + objects)
    grpc = _answer(gw, "gw", "POST", "/shop.Cart/Add", "api.test", GRPC)
    assert grpc.header("x-upstream") is None and grpc.header("grpc-status") == "7", grpc
    assert _answer(gw, "ingress", "GET", "/", "back.test", {}).status == 403
    front = _answer(gw, "ingress", "GET", "/", "front.test", {})
    assert front.status == 200 and front.header("x-upstream") == "ingress-app", front
    statuses = gw.statuses()
    for name, route in (("old-grpc", "grpcroute:cart"), ("old-ingress", "ingress:front:2")):
        status = statuses[f"Policy shop/{name}"]
        assert status["state"] == "Accepted", status
        assert any(f"former name of Route shop/{route}" in r for r in status["reasons"]), status
