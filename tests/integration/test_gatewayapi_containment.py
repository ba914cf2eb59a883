"""A Gateway API object that fails validation is contained like a native resource (DESIGN §2
"Invalid route replacement"), over the wire with a real ``propylon run``: team B's HTTPRoute
with a name Kubernetes refuses is left out, Invalid with ``Accepted=False``, while team A's
routes serve, at start-up and across a reload that also brings team A's new route."""

from __future__ import annotations

import json
import signal
from typing import Any

from tests.support.client import roundtrip
from tests.support.gateway import Gateway
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
  rules: [{{directResponse: nothing}}]
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


def _statuses(gw: Gateway) -> dict[str, dict[str, Any]]:
    status, body = gw.admin_get("/config")
    assert status == 200, body
    return {f"{s['kind']} {s['key']}": s for s in json.loads(body)["statuses"]}


def test_a_route_kubernetes_refuses_is_left_out_at_start_and_on_reload(
    gateways, upstreams
) -> None:
    app = upstreams("app")
    gw = gateways(lambda port: _config(port, app.port, "Team_B_Route"), watch=False)
    response = roundtrip(gw.port, "GET", "/orders", host="a.test")
    assert response.status == 200 and response.header("x-upstream") == "app"
    assert roundtrip(gw.port, "GET", "/", host="b.test").status == 404  # left out
    team_b = _statuses(gw)["HTTPRoute team-b/Team_B_Route"]
    assert team_b["state"] == "Invalid"
    assert any("metadata.name: Accepted=False UnsupportedValue: invalid name" in reason
               for reason in team_b["reasons"]), team_b
    assert _statuses(gw)["HTTPRoute team-a/team-a"]["state"] == "Accepted"
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
    assert _statuses(gw)["HTTPRoute team-b/Team-B"]["state"] == "Invalid"
