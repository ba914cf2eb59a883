"""A check that skips the rules an earlier check proved (``runtime/check_memo.py``) still
refuses what a full compilation refuses: a new rule's bad regex, a proven rule whose upstream
is gone, and everything again once its Gateway changes, or the Consumers do and a filter of
the Gateway sees them."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from propylon import ir
from propylon.config import load_text
from propylon.ir.model import ConsumerIR
from propylon.runtime import check_memo
from propylon.runtime.check_memo import ProvenRules
from propylon.runtime.compile import Services, compile_snapshot
from propylon.translate import translate
from tests.support.resources import SHOP_EDGE_YAML

CONFIG = SHOP_EDGE_YAML + """---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r, namespace: shop}
spec:
  rules:
    - matches: [{path: {prefix: /a}}]
      forward: {backends: [{upstream: app}]}
      policies: [{headers: {response: {set: {x-a: "1"}}}}]
    - matches: [{path: {exact: /ping}}]
      directResponse: {status: 200, body: pong}
"""


@pytest.fixture
def check() -> Iterator[Services]:
    loop = asyncio.new_event_loop()
    services = Services.scratch(loop)
    services.proven = ProvenRules()
    yield services
    loop.close()


def snapshot() -> ir.SnapshotIR:
    loaded = load_text(CONFIG)
    assert not loaded.errors
    return translate(loaded.resources)


def with_rules(snap: ir.SnapshotIR, rules: tuple[ir.RuleIR, ...], **gateway: object
               ) -> ir.SnapshotIR:
    edited = dataclasses.replace(snap.gateways[0], rules=rules, **gateway)
    return dataclasses.replace(snap, gateways=(edited,))


def proven_ids(check: Services) -> dict[int, ir.RuleIR]:
    assert check.proven is not None
    return check.proven.kept["shop/edge"].by_id


def bad_regex(rule: ir.RuleIR) -> ir.RuleIR:
    return dataclasses.replace(rule, id=rule.id + "-bad",
                               matches=(ir.MatchIR(ir.PathMatchIR("regex", "(")),))


def test_proven_rules_are_skipped_and_new_ones_checked(check: Services) -> None:
    first = snapshot()
    compile_snapshot(first, check)
    assert check.proven is not None and len(proven_ids(check)) == 2
    rules = first.gateways[0].rules
    with pytest.raises(Exception, match=r"unterminated|missing"):
        compile_snapshot(with_rules(first, (*rules, bad_regex(rules[1]))), check)
    assert len(proven_ids(check)) == 2  # a failed check proves nothing


def test_a_proven_rule_whose_upstream_is_gone_is_refused(check: Services) -> None:
    first = snapshot()
    compile_snapshot(first, check)
    gone = with_rules(first, first.gateways[0].rules, upstreams=())
    with pytest.raises(KeyError, match="shop/app"):
        compile_snapshot(gone, check)


def test_a_changed_gateway_checks_every_rule_again(check: Services) -> None:
    first = snapshot()
    compile_snapshot(first, check)
    rules = first.gateways[0].rules
    assert check.proven is not None
    # a rule proven before, made bad behind the memo's back, is checked again (and refused)
    # once the Gateway around it changes
    proven_ids(check)[id(rules[1])] = rules[1]
    broken = bad_regex(rules[1])
    proven_ids(check)[id(broken)] = broken
    moved = with_rules(first, (rules[0], broken), trusted_proxies=("10.0.0.0/8",))
    with pytest.raises(Exception, match=r"unterminated|missing"):
        compile_snapshot(moved, check)


@pytest.mark.parametrize(("sees", "checked_again"), [(True, True), (False, False)],
                         ids=["with-a-filter-that-sees-them", "without"])
def test_changed_consumers_check_again_the_gateways_whose_filters_see_them(
        check: Services, sees: bool, checked_again: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter built from the Consumers (``PolicyType.sees_consumers``: a plugin's may be;
    here the API key filter is said to be one) makes a Gateway with one checked whole again
    when they change; another keeps its proven rules (a change of the Consumers of 10,000
    Routes checked every rule). The built-in API key filter itself reads them on each
    request (``filters._common.ConsumerDirectory``): its Gateway keeps its proven rules."""
    monkeypatch.setattr(check_memo, "sees_consumers", lambda policies: sees and any(
        policy.type == "apiKey" for policy in policies))
    first = snapshot()
    rules = first.gateways[0].rules
    keyed = dataclasses.replace(rules[0], policies=(
        *rules[0].policies, ir.PolicyIR("apiKey", {"header": "x-key"}, "test")))
    compile_snapshot(with_rules(first, (keyed, rules[1])), check)
    broken = bad_regex(rules[1])  # made bad behind the memo's back
    proven_ids(check)[id(broken)] = broken
    other_consumers = dataclasses.replace(with_rules(first, (keyed, broken)),
                                          consumers=(ConsumerIR("shop/c", "c"),))
    if checked_again:
        with pytest.raises(Exception, match=r"unterminated|missing"):
            compile_snapshot(other_consumers, check)
    else:
        compile_snapshot(other_consumers, check)  # the rule stays proven


def test_a_rule_proven_in_one_gateway_is_checked_in_another(check: Services) -> None:
    """The same rule object in a second Gateway that lacks its upstream: proven in the first
    Gateway says nothing of the second's upstreams."""
    first = snapshot()
    compile_snapshot(first, check)
    edge = first.gateways[0]
    listener = dataclasses.replace(edge.listeners[0], port=8081)
    other = dataclasses.replace(edge, key="shop/other", listeners=(listener,), upstreams=())
    with pytest.raises(KeyError, match="shop/app"):
        compile_snapshot(dataclasses.replace(first, gateways=(edge, other)), check)
