"""Sections repeated across a configuration (a rule's ``forward``, a policy item) are
validated once per load and shared (``schema.shared_sections``), and translation shares what
it makes of them: the result is what separate objects give, and nothing is shared that
depends on where a section is written."""

from __future__ import annotations

from pathlib import Path

from propylon.config import Route, load_data, load_paths, load_text
from propylon.config.route import Rule
from propylon.ir import ForwardIR
from propylon.schema import IR_CONTEXT, shared_sections
from propylon.translate import translate_with_issues
from tests.support.resources import SHOP_EDGE_YAML


def route(name: str, forward: str, policies: str = "", namespace: str = "shop") -> str:
    return f"""---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  rules:
    - matches: [{{path: {{prefix: /{name}}}}}]
      forward: {forward}
      policies: [{policies}]
"""


FORWARD = "{backends: [{upstream: app}], timeout: 5s}"
POLICY = "{headers: {response: {set: {x-team: shop}}}}"


def rules(text: str) -> list[Rule]:
    loaded = load_text(text, "config.yaml")
    assert not loaded.errors, loaded.errors
    return [r for res in loaded.resources if isinstance(res, Route) for r in res.spec.rules]


def test_equal_sections_are_one_object_and_different_ones_are_not() -> None:
    one, two, other = rules(route("a", FORWARD, POLICY) + route("b", FORWARD, POLICY)
                            + route("c", "{backends: [{upstream: app}], timeout: 6s}",
                                    "{headers: {response: {set: {x-team: '1'}}}}"))
    assert one.forward is two.forward and one.policies[0] is two.policies[0]
    assert other.forward is not one.forward and other.forward is not None
    assert other.forward.timeout == 6.0 and one.forward is not None
    assert one.forward.timeout == 5.0
    assert other.policies[0] is not one.policies[0]


def test_values_equal_as_text_but_of_other_types_are_kept_apart() -> None:
    # 1 and "1" validate to the same header value: two models, equal, not one
    a, b = rules(route("a", FORWARD, "{headers: {response: {set: {x-n: 1}}}}")
                 + route("b", FORWARD, "{headers: {response: {set: {x-n: '1'}}}}"))
    assert a.policies[0] == b.policies[0] and a.policies[0] is not b.policies[0]


def test_nothing_is_shared_outside_a_load_or_under_another_context() -> None:
    data = {"matches": [{"path": {"prefix": "/"}}], "forward": {"backends": [{"upstream": "a"}]}}
    assert Rule.model_validate(data).forward is not Rule.model_validate(data).forward
    with shared_sections():
        dumped = {"matches": [{"path": {"prefix": "/"}}],
                  "forward": {"backends": [{"upstream": "a"}], "timeout": 2.0}}
        first = Rule.model_validate(dumped, context=IR_CONTEXT)
        assert Rule.model_validate(dumped, context=IR_CONTEXT).forward is not first.forward
        assert first.forward is not None and first.forward.timeout == 2.0
    # a resource from the API (one document) validates as before
    made = load_data({"apiVersion": "propylon.dev/v1", "kind": "Route",
                      "metadata": {"name": "x", "namespace": "shop"},
                      "spec": {"rules": [data, data]}})
    got = made.resources[0]
    assert isinstance(got, Route)
    assert got.spec.rules[0].forward == got.spec.rules[1].forward


def test_an_invalid_section_is_reported_at_each_place(tmp_path: Path) -> None:
    bad = "{backends: [{upstream: app}], timeout: soon}"
    (tmp_path / "routes.yaml").write_text(route("a", bad) + route("b", bad))
    loaded = load_paths([tmp_path])
    assert [(e.line, "timeout: invalid duration" in str(e)) for e in loaded.errors] == [
        (8, True), (17, True)]
    assert sorted(r.key for r in loaded.rejected) == ["shop/a", "shop/b"]


def test_translation_shares_a_forward_per_namespace_and_fails_each_owner() -> None:
    text = (SHOP_EDGE_YAML + route("a", FORWARD) + route("b", FORWARD)
            + route("c", "{backends: [{upstream: missing}]}")
            + route("d", "{backends: [{upstream: missing}]}"))
    translation = translate_with_issues(load_text(text, "config.yaml").resources)
    served = {r.route: r for r in translation.snapshot.gateways[0].rules}
    a, b = served["Route shop/a"].action, served["Route shop/b"].action
    assert isinstance(a, ForwardIR) and a is b
    states = {s.key: s.state for s in translation.snapshot.statuses if s.kind == "Route"}
    assert states["shop/c"] == states["shop/d"] == "Invalid"
    located = [i.message for i in translation.issues if "missing" in i.message]
    assert len(located) == 2


def test_policy_specs_are_shared_unless_they_read_a_secret(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    ref = f"{{secretRef: {{file: {tmp_path}/token}}}}"
    secret = f"{{headers: {{request: {{set: {{authorization: {ref}}}}}}}}}"
    text = (SHOP_EDGE_YAML + route("a", FORWARD, POLICY) + route("b", FORWARD, POLICY)
            + route("c", FORWARD, secret) + route("d", FORWARD, secret))
    translation = translate_with_issues(load_text(text, "config.yaml").resources)
    by_route = {r.route: r.policies for r in translation.snapshot.gateways[0].rules}
    a, b = by_route["Route shop/a"], by_route["Route shop/b"]
    assert a[0].spec is b[0].spec and a[0].source != b[0].source
    c, d = by_route["Route shop/c"], by_route["Route shop/d"]
    assert c[0].spec == d[0].spec and c[0].spec is not d[0].spec
