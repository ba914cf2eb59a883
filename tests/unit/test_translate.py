"""propylon.translate: properties that the golden files do not make obvious."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from propylon.config import Resource, load_paths, load_text
from propylon.ir import (
    ForwardIR,
    GatewayIR,
    MatchIR,
    PathMatchIR,
    SnapshotIR,
    StatusIR,
    ValueMatchIR,
)
from propylon.translate import translate
from propylon.translate.matches import nest_match, path_contains
from tests.support.applied import applied

CASES = sorted((Path(__file__).parents[1] / "golden" / "cases").glob("*.yaml"))


def resources(text: str) -> list[Resource]:
    loaded = load_text(textwrap.dedent(text))
    assert loaded.errors == [], [str(e) for e in loaded.errors]
    return loaded.resources


def status(snapshot: SnapshotIR, kind: str, key: str) -> StatusIR:
    return next(s for s in snapshot.statuses if (s.kind, s.key) == (kind, key))


def only_gateway(snapshot: SnapshotIR) -> GatewayIR:
    (gateway,) = snapshot.gateways
    return gateway


GATEWAY = """
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  listeners: [{name: web, port: 8080}]
  routeSelector: {namespaces: ["*"]}
  policies: [{headers: {response: {set: {x-gw: "1"}}}}]
"""


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_version_does_not_depend_on_input_order(case: Path) -> None:
    items = load_paths([case]).resources
    expected = translate(items)
    shuffled = list(items)
    for seed in range(3):
        random.Random(seed).shuffle(shuffled)
        assert translate(shuffled).version == expected.version
    assert expected.version and len(expected.version) == 16


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_ir_invariants(case: Path) -> None:
    snapshot = translate(load_paths([case]).resources)
    for gateway in snapshot.gateways:
        ids = [rule.id for rule in gateway.rules]
        assert len(ids) == len(set(ids)), "rule ids are unique within a Gateway"
        keys = {u.key for u in gateway.upstreams}
        for rule in gateway.rules:
            assert rule.matches, "every served rule can match something"
            if isinstance(rule.action, ForwardIR):
                assert {b.upstream for b in rule.action.backends} <= keys
            if rule.replaced:
                assert rule.action == gateway.invalid_route_response
                assert rule.policies == gateway.default_policies


def test_translate_is_pure() -> None:
    items = load_paths([CASES[0]]).resources
    before = [r.model_dump() for r in items]
    assert translate(items) == translate(items)
    assert [r.model_dump() for r in items] == before


def test_route_table_is_reachable_only_through_delegation() -> None:
    snapshot = translate(
        resources(
            GATEWAY
            + """
---
apiVersion: propylon.dev/v1
kind: RouteTable
metadata: {name: orphan, namespace: infra}
spec:
  rules: [{directResponse: {status: 200}}]
"""
        )
    )
    assert only_gateway(snapshot).rules == ()
    orphan = status(snapshot, "RouteTable", "infra/orphan")
    assert orphan.gateways == ()
    assert orphan.reasons == ("not reached by delegation from any selected Route",)


def test_route_table_of_an_unselected_route_is_not_served() -> None:
    snapshot = translate(
        resources(
            """
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  listeners: [{name: web, port: 8080}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: elsewhere, namespace: other}
spec:
  rules: [{delegate: {selector: {namespaces: [infra]}}}]
---
apiVersion: propylon.dev/v1
kind: RouteTable
metadata: {name: table, namespace: infra}
spec:
  rules: [{directResponse: {status: 200}}]
"""
        )
    )
    assert only_gateway(snapshot).rules == ()
    assert status(snapshot, "Route", "other/elsewhere").reasons == ("not selected by any Gateway",)
    assert status(snapshot, "RouteTable", "infra/table").gateways == ()


def test_enforced_inline_gateway_section_wins_over_rule() -> None:
    text = (
        GATEWAY.replace("policies: [{", "policies: [{enforced: true, ")
        + """
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r, namespace: infra}
spec:
  rules:
    - directResponse: {status: 200}
      policies: [{headers: {response: {set: {x-rule: "1"}}}}]
"""
    )
    gateway = only_gateway(translate(resources(text)))
    (rule,) = gateway.rules
    assert rule.policies == ()  # the rule's own section loses to the enforced one
    (policy,) = applied(gateway, rule)
    assert policy.source == "Gateway infra/edge (enforced)"
    assert policy.spec["response"]["set"] == {"x-gw": "1"}


def test_replaced_rules_keep_hostnames_and_get_gateway_policies() -> None:
    text = (
        GATEWAY
        + """
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r, namespace: infra}
spec:
  hostnames: [a.example.com]
  rules:
    - forward: {backends: [{upstream: nowhere}]}
      policies: [{headers: {response: {set: {x-rule: "1"}}}}]
"""
    )
    snapshot = translate(resources(text))
    (rule,) = only_gateway(snapshot).rules
    assert rule.replaced and rule.hostnames == ("a.example.com",)
    assert rule.policies == ()
    assert [p.source for p in applied(only_gateway(snapshot), rule)] == ["Gateway infra/edge"]
    assert status(snapshot, "Route", "infra/r").state == "Invalid"
    assert only_gateway(snapshot).upstreams == ()


def test_delegate_selecting_nothing_is_noted_not_invalid() -> None:
    text = (
        GATEWAY
        + """
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r, namespace: infra}
spec:
  rules: [{matches: [{path: {prefix: /t}}], delegate: {selector: {matchLabels: {a: b}}}}]
"""
    )
    snapshot = translate(resources(text))
    assert only_gateway(snapshot).rules == ()
    route = status(snapshot, "Route", "infra/r")
    assert route.state == "Accepted"
    assert route.reasons == ("spec.rules[0].delegate: selects no RouteTable",)


def test_no_gateways_still_gives_statuses() -> None:
    snapshot = translate(
        resources(
            """
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: u}
spec:
  endpoints: [{address: 127.0.0.1, port: 1}]
"""
        )
    )
    assert snapshot.gateways == ()
    assert status(snapshot, "Upstream", "default/u").reasons == (
        "not referenced by any served rule",
    )


def _path(kind: str, value: str) -> PathMatchIR:
    return PathMatchIR(kind, value)


@pytest.mark.parametrize(
    ("parent", "child", "inside"),
    [
        pytest.param(_path("prefix", "/team-a"), _path("prefix", "/team-a/x"), True, id="below"),
        pytest.param(_path("prefix", "/team-a"), _path("prefix", "/team-a"), True, id="same"),
        pytest.param(_path("prefix", "/team-a"), _path("exact", "/team-a"), True, id="exact-same"),
        pytest.param(_path("prefix", "/team-a/"), _path("prefix", "/team-a"), True, id="slash"),
        pytest.param(_path("prefix", "/team-a"), _path("prefix", "/team-ax"), False, id="segment"),
        pytest.param(_path("prefix", "/team-a"), _path("exact", "/other"), False, id="outside"),
        pytest.param(_path("prefix", "/team-a"), _path("regex", "/team-a/.*"), False, id="regex"),
        pytest.param(_path("prefix", "/"), _path("regex", ".*"), True, id="regex-under-root"),
        pytest.param(_path("prefix", "/"), _path("prefix", "/anything"), True, id="root"),
        pytest.param(_path("exact", "/a"), _path("exact", "/a"), True, id="exact-exact"),
        pytest.param(_path("exact", "/a"), _path("prefix", "/a"), False, id="exact-prefix"),
        pytest.param(_path("regex", "/a.*"), _path("exact", "/a"), False, id="regex-parent"),
    ],
)
def test_path_contains(parent: PathMatchIR, child: PathMatchIR, inside: bool) -> None:
    assert path_contains(parent, child) is inside


def test_nest_match_adds_parent_conditions_and_refuses_method_conflicts() -> None:
    parent = MatchIR(_path("prefix", "/a"), method="GET")
    assert nest_match(parent, MatchIR(_path("prefix", "/a/b"))) == MatchIR(
        _path("prefix", "/a/b"), method="GET"
    )
    assert nest_match(parent, MatchIR(_path("prefix", "/a/b"), method="POST")) is None


def test_nest_match_under_a_bare_prefix_is_the_child_itself() -> None:
    """A parent of a path alone adds nothing: the child's match is kept as it is (the same
    object: its IR text is written once); a parent header or method is still added."""
    header = ValueMatchIR("x-team", "a")
    child = MatchIR(_path("prefix", "/a/b"), method="GET", headers=(header,))
    assert nest_match(MatchIR(_path("prefix", "/a")), child) is child
    assert nest_match(MatchIR(_path("prefix", "/a"), method="GET"), child) is child
    other = ValueMatchIR("x-env", "prod")
    nested = nest_match(MatchIR(_path("prefix", "/a"), headers=(other,)), child)
    assert nested == MatchIR(_path("prefix", "/a/b"), method="GET", headers=(other, header))
    assert nest_match(MatchIR(_path("prefix", "/a"), method="GET"),
                      MatchIR(_path("prefix", "/a/b"))) == MatchIR(_path("prefix", "/a/b"),
                                                                   method="GET")
