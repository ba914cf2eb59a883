"""Kubernetes names that are no propylon.dev/v1 names, over the wire with a real ``propylon
run``: a Gateway API Gateway ``edge.example.com``, HTTPRoutes ``api.v1-route`` and one of 200
characters, a Service of the longest name Kubernetes allows (its Upstream ``NAME-PORT`` is
68 characters), an Ingress ``shop.example.com``, a listener ``http.web`` and a rule
``orders.v1`` are served under their own names: their statuses are Accepted, the metrics'
``gateway``, ``route`` and ``rule`` labels, the access log and ``propylon explain`` name them
as written. A name Kubernetes refuses (``Api_V1.Route``) is
still contained: its matches answer the invalid route response."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.client import roundtrip
from tests.support.gateway import REPO, metric_value
from tests.support.net import free_port

LONG = "orders." + "a" * 184 + ".v1-route"
assert len(LONG) == 200
SERVICE = "s" + "x" * 62  # an RFC 1035 label of 63: the longest Service name
INGRESS_PORT = free_port()  # the propylon.dev/v1 Gateway serving the Ingress


def _config(port: int, upstream: int) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge.example.com, namespace: infra}}
spec:
  gatewayClassName: propylon
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: http.web, port: {port}, protocol: HTTP,
     allowedRoutes: {{namespaces: {{from: All}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api.v1-route, namespace: shop}}
spec:
  parentRefs: [{{name: edge.example.com, namespace: infra, sectionName: http.web}}]
  hostnames: [api.test]
  rules:
  - name: orders.v1
    matches: [{{path: {{type: PathPrefix, value: /orders}}}}]
    backendRefs: [{{name: {SERVICE}, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {LONG}, namespace: shop}}
spec:
  parentRefs: [{{name: edge.example.com, namespace: infra}}]
  hostnames: [long.test]
  rules: [{{backendRefs: [{{name: {SERVICE}, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: Api_V1.Route, namespace: shop}}
spec:
  parentRefs: [{{name: edge.example.com, namespace: infra}}]
  hostnames: [bad.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /bad}}}}]
    backendRefs: [{{name: {SERVICE}, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {SERVICE}, namespace: shop}}
spec: {{ports: [{{name: http, port: 8080, targetPort: {upstream}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {SERVICE}.abc12
  namespace: shop
  labels: {{kubernetes.io/service-name: {SERVICE}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
ports: [{{name: http, port: {upstream}}}]
---
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: ingress, namespace: infra}}
spec:
  listeners: [{{name: http, port: {INGRESS_PORT}, address: 127.0.0.1}}]
  routeSelector: {{namespaces: ["*"], matchLabels: {{propylon.dev/ingress-class: propylon}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop.example.com, namespace: shop}}
spec:
  ingressClassName: propylon
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix,
         backend: {{service: {{name: {SERVICE}, port: {{number: 8080}}}}}}}}
  - host: www.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix,
         backend: {{service: {{name: {SERVICE}, port: {{number: 8080}}}}}}}}
"""



def _served(port: int, target: str, host: str) -> None:
    response = roundtrip(port, "GET", target, host=host)
    assert response.status == 200 and response.header("x-upstream") == "app", response


def test_kubernetes_names_that_are_no_propylon_names_are_served_as_written(
    gateways, upstreams
) -> None:
    app = upstreams("app")
    gw = gateways(lambda port: _config(port, app.port))
    _served(gw.port, "/orders/1", "api.test")
    _served(gw.port, "/anything", "long.test")
    _served(INGRESS_PORT, "/", "shop.example.com")
    _served(INGRESS_PORT, "/", "www.example.com")
    response = roundtrip(gw.port, "GET", "/bad/1", host="bad.test")  # refused by Kubernetes
    assert (response.status, response.body) == (500, b"route unavailable"), response

    statuses = gw.statuses()
    for ref in ("Gateway infra/edge.example.com", "HTTPRoute shop/api.v1-route",
                f"HTTPRoute shop/{LONG}", "Ingress shop/shop.example.com"):
        assert statuses[ref]["state"] == "Accepted", (ref, statuses[ref])
    parent = "parent Gateway infra/edge.example.com sectionName http.web"
    assert f"{parent}: Accepted=True Accepted" in statuses["HTTPRoute shop/api.v1-route"][
        "reasons"]
    assert statuses["HTTPRoute shop/api.v1-route"]["gateways"] == ["infra/edge.example.com"]
    bad = statuses["HTTPRoute shop/Api_V1.Route"]
    assert bad["state"] == "Invalid"
    assert any('metadata.name: Accepted=False UnsupportedValue: invalid name "Api_V1.Route"'
               in reason for reason in bad["reasons"]), bad

    rules = {rule["route"]: rule for g in json.loads(gw.admin_get("/config")[1])["gateways"]
             for rule in g["rules"]}
    assert rules["Route shop/Api_V1.Route"]["replaced"] is True
    for ref in ("Route shop/api.v1-route", f"Route shop/{LONG}",
                "Route shop/ingress:shop.example.com", "Route shop/ingress:shop.example.com:2"):
        assert not rules[ref].get("replaced"), rules[ref]

    metrics = gw.metrics()
    for gateway, route, host in (("infra/edge.example.com", "shop/api.v1-route", "api"),
                                 ("infra/edge.example.com", f"shop/{LONG}", "long"),
                                 ("infra/ingress", "shop/ingress:shop.example.com", "shop"),
                                 ("infra/ingress", "shop/ingress:shop.example.com:2", "www")):
        assert metric_value(metrics, "propylon_requests_total", gateway=gateway, route=route,
                            code="2xx") == 1, (route, host)
    assert metric_value(metrics, "propylon_requests_total", route="shop/api.v1-route",
                        rule="orders.v1") == 1
    lines = gw.wait_access_log(5)
    assert [line["rule"] for line in lines if line["route"] == "shop/api.v1-route"] == [
        "orders.v1"]
    assert {line["route"] for line in lines} == {
        "shop/api.v1-route", f"shop/{LONG}", "shop/ingress:shop.example.com",
        "shop/ingress:shop.example.com:2", "shop/Api_V1.Route"}

    explained = subprocess.run(
        [sys.executable, "-m", "propylon", "explain", "GET",
         f"http://api.test:{gw.port}/orders/1", "-c", str(gw.config_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "Route shop/api.v1-route" in explained.stdout, explained.stdout
    assert "rule orders.v1" in explained.stdout and "http.web" in explained.stdout, \
        explained.stdout
    assert f"upstream shop/{SERVICE}-8080" in explained.stdout, explained.stdout
    explained = subprocess.run(
        [sys.executable, "-m", "propylon", "explain", "GET",
         f"http://long.test:{gw.port}/x", "-c", str(gw.config_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert f"Route shop/{LONG}" in explained.stdout, explained.stdout
