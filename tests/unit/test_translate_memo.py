"""Translating again with Routes kept from the last translation (``translate/memo.py``) gives
exactly what a translation from scratch gives: snapshot, statuses and located issues, in the
same order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from propylon.config import Rejected, Resource, load_paths, load_text
from propylon.translate import memo, shadows, translate_with_issues
from propylon.translate.translator import Translation
from tests.support.resources import SHOP_EDGE_YAML

CASES = Path(__file__).parents[1] / "golden" / "cases"


def fresh(resources: Sequence[Resource], rejected: Sequence[Rejected] = ()) -> Translation:
    memo._MEMOS.clear()
    shadows._LAST.clear()
    return translate_with_issues(resources, rejected)


def assert_same(got: Translation, expected: Translation) -> None:
    assert got.snapshot.version == expected.snapshot.version
    assert got.snapshot == expected.snapshot
    assert got.issues == expected.issues


def kept_routes() -> int:
    return sum(len(m._entries) for m in memo._MEMOS.values())


@pytest.mark.parametrize("case", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_a_golden_case_translated_again_is_the_same(case: Path) -> None:
    loaded = load_paths([case])
    first = fresh(loaded.resources, loaded.rejected)
    again = translate_with_issues(loaded.resources, loaded.rejected)
    assert_same(again, first)


GATEWAY = SHOP_EDGE_YAML + """---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {name: tag, namespace: shop}
spec:
  targetRefs: [{kind: Route, name: r1, sectionName: api}]
  headers: {response: {set: {x-tag: policy}}}
"""


def route(name: str, prefix: str, upstream: str = "app", extra: str = "",
          policies: str = "cors: {allowOrigins: ['*']}") -> str:
    return f"""apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: {name}, namespace: shop}}
spec:
  rules:
    - name: api
      matches: [{{path: {{prefix: {prefix}}}}}]
      forward: {{backends: [{{upstream: {upstream}}}]}}
      policies: [{{{policies}}}]
{extra}"""


def resources(text: str) -> list[Resource]:
    loaded = load_text(text, "config.yaml")
    assert not loaded.errors, loaded.errors
    return loaded.resources


def test_one_changed_route_is_translated_the_others_are_kept() -> None:
    base = resources(GATEWAY + "---\n" + route("r1", "/a") + "---\n" + route("r2", "/b")
                     + "---\n" + route("r3", "/c", upstream="missing"))
    fresh(base)
    assert kept_routes() == 3
    # a Route whose first step only reported its selection replays it without the tape
    kept = {e.route.key: e.flattened.selected for m in memo._MEMOS.values()
            for e in m._entries.values()}
    assert kept["shop/r1"] == ("Route", "shop/r1", "shop/edge")
    changed = [*base[:-1], *resources(route("r3", "/a"))]  # shadowed by r1 now
    again = translate_with_issues(changed)
    assert_same(again, fresh(changed))
    assert any("never matches" in issue.message for issue in again.issues)


def shadow_warnings(translation: Translation) -> list[str]:
    return [f"{issue.name}: {issue.message}" for issue in translation.issues
            if "never matches" in issue.message]


def test_shadowed_rules_are_found_as_routes_come_and_go() -> None:
    """The buckets counted for the last translation of each Gateway (``shadows._Buckets``)
    follow Routes added, changed and removed, and two Gateways translated in turn: only the
    rules between the unchanged ends are looked at, and the counts are those of a count
    from scratch."""
    second = GATEWAY.replace("name: edge", "name: side").replace("port: 8080", "port: 8081")
    one, two = resources(GATEWAY)[:2], resources(second)[:1]
    r1, r2 = resources(route("r1", "/a")), resources(route("r2", "/b"))
    steps = [
        [*one, *r1, *r2],
        [*one, *r1, *r2, *resources(route("r3", "/a"))],  # r3 shadowed by r1
        [*one, *r1, *r2, *resources(route("r3", "/a")), *two],  # and on the second Gateway
        [*one, *r1, *r2, *two],  # r3 gone
        [*one, *resources(route("r1", "/b")), *r2, *two],  # r2 shadowed by r1 now
        [*one, *r2, *two],
    ]
    expected = [0, 1, 2, 0, 2, 0]
    fresh(steps[0])
    for step, count in zip(steps, expected, strict=True):
        again = translate_with_issues(step)
        assert_same(again, fresh_after(step))
        assert len(shadow_warnings(again)) == count, shadow_warnings(again)
        for kept in shadows._LAST.values():  # counted as from scratch
            recounted = shadows._Buckets()
            assert recounted.update(list(kept.order))
            assert (kept.counts, kept.shared, kept.catch_alls, kept.rules.keys()) == (
                recounted.counts, recounted.shared, recounted.catch_alls, recounted.rules.keys())



def test_a_rule_object_met_twice_is_counted_each_time_and_not_kept() -> None:
    """The same rule object at two places of a Gateway's rules (each is a match of its own:
    the second is shadowed by the first) is counted from scratch, and the buckets are not
    kept; the next call without it counts and keeps them again."""
    rules = translate_with_issues([*resources(GATEWAY), *resources(route("r1", "/a")),
                                   *resources(route("r2", "/b"))]).snapshot.gateways[0].rules
    first, second = rules[0], rules[1]
    shadows._LAST.pop("test/twice", None)
    twice = shadows._sharing_entries("test/twice", [(None, r) for r in (first, second, first)])
    assert [entry.payload for entry in twice] == [0, 2]
    assert "test/twice" not in shadows._LAST
    once = shadows._sharing_entries("test/twice", [(None, r) for r in (first, second)])
    assert once == [] and shadows._LAST["test/twice"].order == [first, second]
    shadows._LAST.pop("test/twice")

def fresh_after(step: Sequence[Resource]) -> Translation:
    """A translation from scratch that leaves the memos of the last one as they were."""
    memos, buckets = dict(memo._MEMOS), dict(shadows._LAST)
    try:
        return fresh(step)
    finally:
        memo._MEMOS.clear()
        memo._MEMOS.update(memos)
        shadows._LAST.clear()
        shadows._LAST.update(buckets)


def test_a_policy_change_reaches_the_routes_it_targets() -> None:
    base = resources(GATEWAY + "---\n" + route("r1", "/a"))
    fresh(base)
    policy = resources(GATEWAY.replace("x-tag: policy", "x-tag: changed"))[2]
    changed = [base[0], base[1], policy, base[3]]
    again = translate_with_issues(changed)
    assert_same(again, fresh(changed))
    assert "changed" in str(again.snapshot.gateways[0].rules[0].policies)


def test_an_invalid_route_is_kept_with_its_status_and_issue() -> None:
    base = resources(GATEWAY + "---\n" + route("r1", "/a", upstream="missing"))
    first = fresh(base)
    again = translate_with_issues(base)
    assert_same(again, first)
    assert [s.state for s in again.snapshot.statuses if s.kind == "Route"] == ["Invalid"]


def secret_route(folder: Path) -> str:
    secret = f"{{secretRef: {{file: {folder}/token}}}}"
    return route("r1", "/a", extra=f"""    - matches: [{{path: {{prefix: /s}}}}]
      forward: {{backends: [{{upstream: app}}]}}
      policies: [{{headers: {{request: {{set: {{authorization: {secret}}}}}}}}}]
""")


def test_a_route_reading_a_secret_is_translated_each_time(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("one\n")
    base = resources(GATEWAY + "---\n" + secret_route(tmp_path) + "---\n" + route("r2", "/b"))
    fresh(base)
    assert kept_routes() == 1  # r2 only
    (tmp_path / "token").write_text("two\n")
    again = translate_with_issues(base)
    assert_same(again, fresh(base))
    assert "two" in str(again.snapshot.gateways[0].rules)


def test_a_gateway_policy_reading_a_secret_keeps_no_route(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("one\n")
    gateway = GATEWAY.replace(
        "  routeSelector: {namespaces: [shop]}\n",
        "  routeSelector: {namespaces: [shop]}\n  policies:\n    - headers: {request: {set: "
        f"{{x-key: {{secretRef: {{file: {tmp_path}/token}}}}}}}}}}\n")
    base = resources(gateway + "---\n" + route("r1", "/a"))
    fresh(base)
    assert kept_routes() == 0
    (tmp_path / "token").write_text("two\n")
    again = translate_with_issues(base)
    assert_same(again, fresh(base))
    assert "two" in str(again.snapshot.gateways[0].default_policies)


DELEGATING_CASES = ["cycle", "nested_delegation", "contained_routes", "design_example"]


def kept_delegating_routes() -> int:
    return sum(any(rule.delegate is not None for rule in entry.route.spec.rules)
               for m in memo._MEMOS.values() for entry in m._entries.values())


def other_route(namespace: str) -> list[Resource]:
    return resources(f"""apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: added, namespace: {namespace}}}
spec:
  rules:
    - matches: [{{path: {{exact: /added-by-another-team}}}}]
      directResponse: {{status: 204}}
""")


@pytest.mark.parametrize("name", DELEGATING_CASES)
def test_delegating_routes_are_kept_when_another_route_changes(name: str) -> None:
    loaded = load_paths([CASES / f"{name}.yaml"])
    fresh(loaded.resources, loaded.rejected)
    assert kept_delegating_routes() >= 1
    namespaces = {r.namespace for r in loaded.resources if r.kind == "Route"}
    changed = [*loaded.resources, *(r for ns in sorted(namespaces) for r in other_route(ns))]
    again = translate_with_issues(changed, loaded.rejected)
    assert kept_delegating_routes() >= 1
    assert_same(again, fresh(changed, loaded.rejected))


@pytest.mark.parametrize("name", DELEGATING_CASES)
def test_a_changed_route_table_reaches_the_routes_that_delegate_to_it(name: str) -> None:
    loaded = load_paths([CASES / f"{name}.yaml"])
    fresh(loaded.resources, loaded.rejected)
    table = next(r for r in loaded.resources if r.kind == "RouteTable")
    labels = dict(table.metadata.labels)
    edited = resources(f"""apiVersion: propylon.dev/v1
kind: RouteTable
metadata: {{name: {table.name}, namespace: {table.namespace}, labels: {labels}}}
spec:
  rules: [{{matches: [{{path: {{prefix: /edited}}}}], directResponse: {{status: 202}}}}]
""".replace("'", '"'))
    changed = [edited[0] if r is table else r for r in loaded.resources]
    again = translate_with_issues(changed, loaded.rejected)
    assert_same(again, fresh(changed, loaded.rejected))


def test_a_rule_object_given_twice_shares_its_buckets_with_itself() -> None:
    """Not what translation makes, but counted per occurrence as before the counts were
    kept: both of its matches are entries the shadow check sees."""
    translation = fresh(resources(GATEWAY + "---\n" + route("r1", "/a")))
    rule = translation.snapshot.gateways[0].rules[0]
    draft = object()
    got = shadows._sharing_entries("shop/other", [(draft, rule), (draft, rule)])  # type: ignore[list-item]
    assert [entry.payload for entry in got] == [0, 1]
    assert "shop/other" not in shadows._LAST  # nothing kept from such a list


def upstream(port: int, allowed: str = "[]", namespace: str = "shop") -> list[Resource]:
    return resources(f"""apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: app, namespace: {namespace}}}
spec: {{endpoints: [{{address: 127.0.0.1, port: {port}}}], allowedNamespaces: {allowed}}}
""")


def test_an_upstream_changed_as_rules_do_not_read_it_keeps_every_route(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rules read of an Upstream only whether it exists and which namespaces it admits: a
    change of its endpoints (the most frequent change of a running configuration) keeps
    every Route's rules, and the new endpoints are served."""
    from propylon.translate import gateway as gateway_step

    gateway, _, policy = resources(GATEWAY)
    routes = resources("---\n".join(route(f"r{i}", f"/{i}") for i in range(3)))
    fresh([gateway, *upstream(9000), policy, *routes])
    translated: list[str] = []
    flatten = gateway_step.flatten_route
    monkeypatch.setattr(gateway_step, "flatten_route",
                        lambda ctx, route: translated.append(route.key) or flatten(ctx, route))
    changed = [gateway, *upstream(9001), policy, *routes]
    again = translate_with_issues(changed)
    assert translated == []  # every Route kept
    assert [e.port for e in again.snapshot.gateways[0].upstreams[0].endpoints] == [9001]
    assert_same(again, fresh(changed))


def test_an_upstream_admitting_other_namespaces_reaches_the_rules_that_use_it() -> None:
    gateway = resources(SHOP_EDGE_YAML.replace("namespaces: [shop]", "namespaces: [shop, back]"))[0]
    routes = resources(route("r1", "/a", upstream="back/app"))
    steps = [[gateway, *upstream(9000, "[shop]", "back"), *routes],
             [gateway, *upstream(9000, "[]", "back"), *routes],  # shop no longer admitted
             [gateway, *upstream(9001, "['*']", "back"), *routes]]
    fresh(steps[0])
    states = []
    for step in steps:
        again = translate_with_issues(step)
        assert_same(again, fresh_after(step))
        states.append(next(s.state for s in again.snapshot.statuses if s.key == "shop/r1"))
    assert states == ["Accepted", "Invalid", "Accepted"]


def table(name: str, group: str, prefix: str, extra: str = "") -> str:
    return f"""apiVersion: propylon.dev/v1
kind: RouteTable
metadata: {{name: {name}, namespace: shop, labels: {{group: {group}}}}}
spec:
  rules:
    - matches: [{{path: {{prefix: {prefix}}}}}]
      directResponse: {{status: 200, body: {name}}}{extra}
"""


def delegating(name: str, group: str) -> str:
    return f"""apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: {name}, namespace: shop}}
spec:
  rules:
    - matches: [{{path: {{prefix: /{group}}}}}]
      delegate: {{selector: {{matchLabels: {{group: {group}}}}}}}
"""


def tables(*texts: str) -> list[Resource]:
    return resources("---\n".join(texts))


@pytest.mark.parametrize(("change", "translated_again"), [
    pytest.param(lambda t1, t2: [*tables(table("t1", "g1", "/g1/one", "\n      name: edited")),
                                 t2], ["shop/d1"], id="a-table-edited"),
    # what selectors read changed: every Route is translated again
    pytest.param(lambda t1, t2: [*tables(table("t1", "g2", "/g2/one")), t2],
                 ["shop/d1", "shop/d2"], id="a-table-moved-to-another-group"),
    pytest.param(lambda t1, t2: [t1, t2, *tables(table("t3", "g1", "/g1/three"))],
                 ["shop/d1", "shop/d2"], id="a-table-added"),
    pytest.param(lambda t1, t2: [t2], ["shop/d1", "shop/d2"], id="a-table-removed"),
])
def test_a_route_table_change_translates_the_routes_that_delegate_to_it(
        change: Callable[[Resource, Resource], list[Resource]], translated_again: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A delegating Route is kept while the RouteTables its delegations selected are the
    same objects and every table's key and labels are as they were (what selectors read):
    one table edited among 10,000 translates the Routes that delegate to it."""
    from propylon.translate import gateway as gateway_step

    gateway, upstream_app, _ = resources(GATEWAY)
    routes = resources(delegating("d1", "g1") + "---\n" + delegating("d2", "g2"))
    t1, t2 = tables(table("t1", "g1", "/g1/one"), table("t2", "g2", "/g2/two"))
    fresh([gateway, upstream_app, *routes, t1, t2])
    translated: list[str] = []
    flatten = gateway_step.flatten_route
    monkeypatch.setattr(gateway_step, "flatten_route",
                        lambda ctx, route: translated.append(route.key) or flatten(ctx, route))
    changed = [gateway, upstream_app, *routes, *change(t1, t2)]
    again = translate_with_issues(changed)
    assert translated == translated_again
    assert_same(again, fresh_after(changed))


def policy(name: str, target: str, value: str, kind: str = "Route") -> str:
    return f"""apiVersion: propylon.dev/v1
kind: Policy
metadata: {{name: {name}, namespace: shop}}
spec:
  targetRefs: [{{kind: {kind}, name: {target}}}]
  headers: {{response: {{set: {{x-policy: "{value}"}}}}}}
# policy {name}
"""


def load_again(last: list[tuple[str, list[Resource]]], text: str
               ) -> list[tuple[str, list[Resource]]]:
    """``text``'s documents, each the resources ``last`` made of it when written as it was
    (as the loader keeps them, ``config/loader.py``), else loaded anew."""
    made = dict(last)
    return [(doc, made[doc] if doc in made else resources(doc)) for doc in text.split("---\n")]


def flat(documents: list[tuple[str, list[Resource]]]) -> list[Resource]:
    return [resource for _, made in documents for resource in made]


@pytest.fixture
def translated(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the Routes translated (not kept) from now on, in order."""
    from propylon.translate import gateway as gateway_step

    keys: list[str] = []
    flatten = gateway_step.flatten_route
    monkeypatch.setattr(gateway_step, "flatten_route",
                        lambda ctx, route: keys.append(route.key) or flatten(ctx, route))
    return keys


@pytest.mark.parametrize(("edit", "translated_again"), [
    pytest.param(lambda text: text.replace('x-policy: "one"', 'x-policy: "two"'),
                 ["shop/r1"], id="the-policy-of-one-route-edited"),
    pytest.param(lambda text: text.replace("name: r1}]", "name: r2}]"),
                 ["shop/r1", "shop/r2"], id="the-policy-moved-to-another-route"),
    pytest.param(lambda text: text + "---\n" + policy("p2", "r3", "three"),
                 ["shop/r3"], id="a-policy-added"),
    # rules carry no Gateway-level policy but an enforced one's winning over theirs
    pytest.param(lambda text: text.replace('x-gateway: "g"', 'x-gateway: "h"'),
                 [], id="the-gateway-policy-edited"),
    pytest.param(lambda text: text.replace("policies: [{headers: {request",
                                           "policies: [{enforced: true, headers: {request"),
                 ["shop/r1", "shop/r2", "shop/r3"], id="the-gateway-policy-enforced"),
    # which types an enforced policy takes, from where, is what rules read: not its settings
    pytest.param(lambda text: text.replace(
        "policies: [{headers: {request",
        "policies: [{enforced: true, cors: {allowOrigins: ['https://a.com']}}, {headers: {request"),
                 ["shop/r1", "shop/r2", "shop/r3"], id="an-enforced-policy-added"),
    # new objects: the Gateway's level is compared by value, a Route's policies as objects
    pytest.param(lambda text: text.replace("# policy", "# again"),
                 ["shop/r1"], id="every-policy-written-again-the-same"),
    pytest.param(lambda text: text.replace("port: 8080", "port: 8081"),
                 [], id="the-gateway-listener-changed"),
    pytest.param(lambda text: text.replace(
        "  routeSelector: {namespaces: [shop]}\n",
        "  routeSelector: {namespaces: [shop]}\n  trustedProxies: [10.0.0.0/8]\n"),
                 [], id="the-gateway-trusted-proxies-changed"),
    pytest.param(lambda text: text.replace(
        "  routeSelector: {namespaces: [shop]}\n",
        "  routeSelector: {namespaces: [shop]}\n  invalidRouteResponse: {status: 503}\n"),
                 ["shop/r1", "shop/r2", "shop/r3"], id="the-invalid-route-response-changed"),
    pytest.param(lambda text: text.replace("namespaces: [shop]}", "namespaces: [shop, back]}"),
                 ["shop/r1", "shop/r2", "shop/r3"], id="the-route-selector-changed"),
])
def test_a_policy_or_gateway_change_translates_the_routes_it_reaches(
        edit: Callable[[str], str], translated_again: list[str],
        translated: list[str]) -> None:
    """Routes are kept unless a Policy targeting them changed (objects) or the Gateway
    changed as rules read it (``memo.gateway_view``, by value): one Policy edited among
    10,000 Routes translated every Route again, and so did a listener's certificate
    renewed."""
    gateway_policy = ('  policies: [{headers: {request: {set: {x-gateway: "g"}}}}]\n'
                      "# policy\n---\n" + policy("pg", "edge", "g", kind="Gateway"))
    text = (SHOP_EDGE_YAML.replace("  routeSelector: {namespaces: [shop]}\n",
                                   "  routeSelector: {namespaces: [shop]}\n" + gateway_policy)
            + "---\n" + policy("p1", "r1", "one") + "---\n"
            + "---\n".join(route(f"r{i}", f"/{i}") for i in (1, 2, 3)))
    documents = load_again([], text)
    fresh(flat(documents))
    translated.clear()
    changed = flat(load_again(documents, edit(text)))
    again = translate_with_issues(changed)
    assert translated == translated_again
    assert_same(again, fresh(changed))


def test_an_enforced_policy_s_settings_edited_translates_no_route(
        translated: list[str]) -> None:
    """Rules read which types an enforced Gateway-level policy takes, and its source (a
    Policy it overrides is told so): not its settings, which only the Gateway's default
    policies carry. The Policy on r1 stays overridden, as a translation from scratch says."""
    gateway_policy = '  policies: [{enforced: true, headers: {request: {set: {x-gw: "g"}}}}]\n'
    text = (SHOP_EDGE_YAML.replace("  routeSelector: {namespaces: [shop]}\n",
                                   "  routeSelector: {namespaces: [shop]}\n" + gateway_policy)
            + "---\n" + policy("p1", "r1", "one") + "---\n"
            + "---\n".join(route(f"r{i}", f"/{i}") for i in (1, 2, 3)))
    documents = load_again([], text)
    first = fresh(flat(documents))
    assert any("headers overridden by Gateway shop/edge (enforced)" in reason
               for status in first.snapshot.statuses for reason in status.reasons)
    translated.clear()
    changed = flat(load_again(documents, text.replace('x-gw: "g"', 'x-gw: "h"')))
    again = translate_with_issues(changed)
    assert translated == []
    assert_same(again, fresh(changed))


def test_a_policy_targeting_a_route_table_reaches_the_routes_delegating_to_it(
        translated: list[str]) -> None:
    gateway, upstream_app, _ = resources(GATEWAY)
    routes = resources(delegating("d1", "g1") + "---\n" + delegating("d2", "g2"))
    t1, t2 = tables(table("t1", "g1", "/g1/one"), table("t2", "g2", "/g2/two"))
    base = [gateway, upstream_app, *routes, t1, t2]
    fresh([*base, *resources(policy("pt", "t2", "one", kind="RouteTable"))])
    translated.clear()
    changed = [*base, *resources(policy("pt", "t2", "two", kind="RouteTable"))]
    again = translate_with_issues(changed)
    assert translated == ["shop/d2"]
    assert_same(again, fresh(changed))
    assert "two" in str(again.snapshot.gateways[0].rules)
