"""Rules whose only policy candidates are their Gateway's inline sections skip attachment
(``replace.build_rules``) and still get policies of their own: equal to the Gateway's
defaults, never the same objects (a worker finds a rule's filters by the identity of its
policies, so sharing them would share filters, and their state, between rules)."""

from __future__ import annotations

from propylon.config import load_text
from propylon.translate import translate

CONFIG = """apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  listeners: [{name: web, port: 8080}]
  routeSelector: {namespaces: [shop]}
  policies: [{headers: {response: {set: {x-gw: "1"}}}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r, namespace: shop}
spec:
  rules:
    - matches: [{path: {exact: /a}}]
      directResponse: {status: 200}
    - matches: [{path: {exact: /b}}]
      directResponse: {status: 200}
    - matches: [{path: {exact: /c}}]
      directResponse: {status: 200}
      policies: [{headers: {response: {set: {x-rule: "1"}}}}]
"""


def test_gateway_defaults_are_each_rule_s_own_objects() -> None:
    loaded = load_text(CONFIG)
    assert not loaded.errors
    gateway = translate(loaded.resources).gateways[0]
    first, second, third = (rule.policies for rule in gateway.rules)
    assert first == second == gateway.default_policies
    assert first is not second and first is not gateway.default_policies
    assert first[0] is not second[0]
    assert [p.type for p in third] == ["headers"]
    assert third[0].spec["response"]["set"] == {"x-rule": "1"}
