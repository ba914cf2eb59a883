"""A Kubernetes object that fails validation is contained like a native resource (DESIGN §2
"Invalid route replacement"), over the wire with a real ``propylon run``: team B's HTTPRoute
with a name Kubernetes refuses is Invalid with ``Accepted=False`` and its own matches answer
the Gateway's ``invalidRouteResponse``, while team A's routes serve, at start-up and across a
reload that also brings team A's new route; an Ingress with such a name answers the
``invalidRouteResponse`` of the propylon.dev/v1 Gateway that selects its Routes."""

from __future__ import annotations

import json
import signal

from tests.support.client import roundtrip
from tests.support.net import poll_until


def _config(port: int, upstream: int, team_b_name: str) -> str:
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
kind: Upstream
metadata: {{name: app, namespace: team-a}}
spec: {{endpoints: [{{address: 127.0.0.1, port: {upstream}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: team-a, namespace: team-a}}
spec:
  parentRefs: [{{name: eg, namespace: infra}}]
  hostnames: [a.test]
  rules: [{{backendRefs: [{{group: propylon.dev, kind: Upstream, name: app}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {team_b_name}, namespace: team-b}}
spec:
  parentRefs: [{{name: eg, namespace: infra}}]
  hostnames: [b.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /b}}}}]
    backendRefs: [{{group: propylon.dev, kind: Upstream, name: app}}]
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: app, namespace: team-b}}
spec: {{endpoints: [{{address: 127.0.0.1, port: {upstream}}}]}}
"""


def _team_a_new(port: int) -> str:
    return """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: team-a-new, namespace: team-a}
spec:
  parentRefs: [{name: eg, namespace: infra}]
  hostnames: [new.test]
  rules: [{backendRefs: [{group: propylon.dev, kind: Upstream, name: app}]}]
"""



def _replaced_answer(port: int, target: str, host: str) -> None:
    """``target`` on ``host`` answers the Gateway API Gateway's invalidRouteResponse (the
    default: a Gateway API Gateway has no field for it)."""
    response = roundtrip(port, "GET", target, host=host)
    assert (response.status, response.body) == (500, b"route unavailable"), response


def test_a_route_kubernetes_refuses_answers_the_invalid_route_response_on_its_matches(
    gateways, upstreams
) -> None:
    app = upstreams("app")
    gw = gateways(lambda port: _config(port, app.port, "Team_B_Route"), watch=False)
    response = roundtrip(gw.port, "GET", "/orders", host="a.test")
    assert response.status == 200 and response.header("x-upstream") == "app"
    _replaced_answer(gw.port, "/b/orders", "b.test")  # its own match, not forwarded
    assert roundtrip(gw.port, "GET", "/other", host="b.test").status == 404  # not its match
    team_b = gw.statuses()["HTTPRoute team-b/Team_B_Route"]
    assert team_b["state"] == "Invalid"
    assert any("metadata.name: Accepted=False UnsupportedValue: invalid name" in reason
               for reason in team_b["reasons"]), team_b
    assert "its rules answer the invalid route response until it is fixed" in team_b["reasons"]
    assert team_b["gateways"] == ["infra/eg"]
    rules = {rule["route"]: rule for rule in json.loads(gw.admin_get("/config")[1])[
        "gateways"][0]["rules"]}
    assert rules["Route team-b/Team_B_Route"]["replaced"] is True
    assert gw.statuses()["HTTPRoute team-a/team-a"]["state"] == "Accepted"
    # one reload: team B fixes its name but breaks it again as another, team A adds a route
    gw.write_config(lambda port: _config(port, app.port, "Team-B"))
    gw.write_config(_team_a_new, "team-a.yaml")
    version = gw.version()
    gw.signal(signal.SIGHUP)
    poll_until(lambda: gw.version() != version, 10, message="the reload installed")
    assert gw.reloads() == (1, 0)
    response = roundtrip(gw.port, "GET", "/", host="new.test")
    assert response.status == 200 and response.header("x-upstream") == "app"
    assert roundtrip(gw.port, "GET", "/orders", host="a.test").status == 200
    assert gw.statuses()["HTTPRoute team-b/Team-B"]["state"] == "Invalid"
    _replaced_answer(gw.port, "/b", "b.test")
    # fixed: team B's route forwards
    gw.write_config(lambda port: _config(port, app.port, "team-b"))
    version = gw.version()
    gw.signal(signal.SIGHUP)
    poll_until(lambda: gw.version() != version, 10, message="the second reload installed")
    response = roundtrip(gw.port, "GET", "/b", host="b.test")
    assert response.status == 200 and response.header("x-upstream") == "app"


def test_an_ingress_kubernetes_refuses_answers_its_gateways_invalid_route_response(
    gateways, upstreams
) -> None:
    app = upstreams("app")
    gw = gateways(lambda port: f"""
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: ingress, namespace: infra}}
spec:
  listeners: [{{name: http, port: {port}, address: 127.0.0.1}}]
  routeSelector: {{namespaces: ["*"], matchLabels: {{propylon.dev/ingress-class: propylon}}}}
  invalidRouteResponse: {{status: 503, body: team route broken}}
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: app, namespace: shop}}
spec: {{endpoints: [{{address: 127.0.0.1, port: {app.port}}}]}}
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: app, namespace: team-b}}
spec: {{endpoints: [{{address: 127.0.0.1, port: {app.port}}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: shop}}
spec:
  ingressClassName: propylon
  rules:
  - host: shop.test
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app}}}}}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: Team_B_Ingress, namespace: team-b}}
spec:
  ingressClassName: propylon
  rules:
  - host: b.test
    http: {{paths: [{{path: /b, pathType: Prefix, backend: {{service: {{name: app}}}}}}]}}
""")
    response = roundtrip(gw.port, "GET", "/", host="shop.test")
    assert response.status == 200 and response.header("x-upstream") == "app"
    response = roundtrip(gw.port, "GET", "/b/x", host="b.test")
    assert (response.status, response.body) == (503, b"team route broken"), response
    assert roundtrip(gw.port, "GET", "/c", host="b.test").status == 404
    bad = gw.statuses()["Ingress team-b/Team_B_Ingress"]
    assert bad["state"] == "Invalid" and bad["gateways"] == ["infra/ingress"], bad
