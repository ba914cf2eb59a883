"""propylon.dev/v1 Policies targeting converted resources whose Kubernetes names are no
propylon.dev/v1 names, over the wire with a real ``propylon run``: a Policy targets the
Gateway API Gateway ``edge.example.com``, the Route of the HTTPRoute ``api.v1-route`` and its
rule ``orders.v1`` (``sectionName``), and each is attached: the answers carry the Policies'
effects, their statuses are Accepted, ``propylon explain`` names them. A target name
Kubernetes refuses (``Team_Route``) is still refused, with an error saying what a target name
may be, and the Policy's namespace fails closed as for any unreadable Policy."""

from __future__ import annotations

from tests.support.client import roundtrip
from tests.support.gateway import propylon


def _config(port: int, upstream: int) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge.example.com, namespace: infra}}
spec:
  gatewayClassName: propylon
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: http.web, port: {port}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {{name: edge-headers, namespace: infra}}
spec:
  targetRefs: [{{kind: Gateway, name: edge.example.com}}]
  headers: {{response: {{set: {{x-gateway-policy: edge}}}}}}
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: app, namespace: shop}}
spec: {{endpoints: [{{address: 127.0.0.1, port: {upstream}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api.v1-route, namespace: shop}}
spec:
  parentRefs: [{{name: edge.example.com, namespace: infra}}]
  hostnames: [api.test]
  rules:
  - name: orders.v1
    matches: [{{path: {{type: PathPrefix, value: /orders}}}}]
    backendRefs: [{{group: propylon.dev, kind: Upstream, name: app}}]
  - name: other
    matches: [{{path: {{type: PathPrefix, value: /other}}}}]
    backendRefs: [{{group: propylon.dev, kind: Upstream, name: app}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: plain, namespace: shop}}
spec:
  parentRefs: [{{name: edge.example.com, namespace: infra}}]
  hostnames: [plain.test]
  rules: [{{backendRefs: [{{group: propylon.dev, kind: Upstream, name: app}}]}}]
---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {{name: api-route, namespace: shop}}
spec:
  targetRefs: [{{kind: Route, name: api.v1-route}}]
  headers: {{response: {{set: {{x-route-policy: api}}}}}}
---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {{name: api-orders, namespace: shop}}
spec:
  targetRefs: [{{kind: Route, name: api.v1-route, sectionName: orders.v1}}]
  ipFilter: {{deny: [127.0.0.0/8]}}
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: app, namespace: team}}
spec: {{endpoints: [{{address: 127.0.0.1, port: {upstream}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: team.route, namespace: team}}
spec:
  parentRefs: [{{name: edge.example.com, namespace: infra}}]
  hostnames: [team.test]
  rules: [{{backendRefs: [{{group: propylon.dev, kind: Upstream, name: app}}]}}]
---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {{name: refused, namespace: team}}
spec:
  targetRefs: [{{kind: Route, name: Team_Route}}]
  headers: {{response: {{set: {{x-team: "1"}}}}}}
"""




def test_a_policy_targets_dotted_kubernetes_names(gateways, upstreams) -> None:
    app = upstreams("app")
    gw = gateways(lambda port: _config(port, app.port))

    other = roundtrip(gw.port, "GET", "/other/1", host="api.test")
    assert other.status == 200 and other.header("x-upstream") == "app", other
    assert other.header("x-route-policy") == "api", other  # the Route's Policy wins
    assert other.header("x-gateway-policy") is None, other
    orders = roundtrip(gw.port, "GET", "/orders/1", host="api.test")
    assert orders.status == 403, orders  # the rule's Policy: ipFilter
    plain = roundtrip(gw.port, "GET", "/", host="plain.test")
    assert plain.status == 200 and plain.header("x-gateway-policy") == "edge", plain
    team = roundtrip(gw.port, "GET", "/", host="team.test")
    assert team.status == 500, team  # its namespace's unreadable Policy fails it closed

    statuses = gw.statuses()
    for ref in ("Policy infra/edge-headers", "Policy shop/api-route", "Policy shop/api-orders",
                "HTTPRoute shop/api.v1-route", "Gateway infra/edge.example.com"):
        assert statuses[ref]["state"] == "Accepted", (ref, statuses[ref])
    assert statuses["Policy shop/api-route"]["gateways"] == ["infra/edge.example.com"]
    refused = statuses["Policy team/refused"]
    assert refused["state"] == "Invalid", refused
    assert any('invalid name "Team_Route"' in r and "DNS subdomain" in r
               for r in refused["reasons"]), refused

    explained = propylon("explain", "GET", f"http://api.test:{gw.port}/other/1",
                          "-c", str(gw.config_dir))
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "Policy shop/api-route -> Route shop/api.v1-route" in explained.stdout, \
        explained.stdout
    explained = propylon("explain", "GET", f"http://api.test:{gw.port}/orders/1",
                          "-c", str(gw.config_dir))
    assert "Policy shop/api-orders -> Route shop/api.v1-route rule orders.v1" in \
        explained.stdout, explained.stdout

    validated = propylon("validate", str(gw.config_dir))
    out = validated.stdout + validated.stderr
    assert validated.returncode == 1, out
    assert 'Policy team/refused: spec.targetRefs[0].name: invalid name "Team_Route": a target ' \
        "is named as Kubernetes names objects, a DNS subdomain" in out, out
    # the refused name, and what ``run`` does about it (the route it targets answers the
    # invalid route response): nothing about the dotted names
    problems = [line for line in out.splitlines() if line and "problem(s)" not in line]
    assert all("Policy team/refused" in line for line in problems), out
