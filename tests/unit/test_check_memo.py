"""A check that skips the rules an earlier check proved (``runtime/check_memo.py``) still
refuses what a full compilation refuses: a new rule's bad regex, a proven rule whose upstream
is gone, and everything again once the Consumers change and a filter of the Gateway sees
them. An edit of the rest of the Gateway (listeners, upstreams' settings, trusted proxies)
checks no rule again; a configuration the workers compiled is proven as a check's is."""

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


def broken_behind_the_memos_back(check: Services, rule: ir.RuleIR) -> ir.RuleIR:
    """``rule`` with a regex that does not compile, entered in the memo as proven: a check
    that looks at it again refuses the snapshot, one that skips it does not."""
    broken = bad_regex(rule)
    proven_ids(check)[id(broken)] = broken
    return broken


def test_a_gateway_edit_that_removes_no_upstream_checks_no_rule_again(check: Services
                                                                      ) -> None:
    """What the rest of a Gateway is compiled into (clusters, listeners, trusted networks,
    tracing) is compiled by every check; a proven rule is not looked at again."""
    first = snapshot()
    compile_snapshot(first, check)
    rules = first.gateways[0].rules
    broken = broken_behind_the_memos_back(check, rules[1])
    compile_snapshot(with_rules(first, (rules[0], broken)), check)  # skipped: the same place
    edge = first.gateways[0]
    app = dataclasses.replace(edge.upstreams[0], connect_timeout=3.0)
    listener = dataclasses.replace(edge.listeners[0], port=edge.listeners[0].port + 1)
    for edit in ({"trusted_proxies": ("10.0.0.0/8",)}, {"upstreams": (app,)},
                 {"listeners": (listener,)}):
        compile_snapshot(with_rules(first, (rules[0], broken), **edit), check)
    # its own Gateway's edits aside, the broken rule is still refused where it is new
    with pytest.raises(Exception, match=r"unterminated|missing"):
        compile_snapshot(with_rules(first, (rules[0], rules[1], bad_regex(rules[0]))), check)


def test_an_upstream_gone_checks_again_the_rules_forwarding_to_it(check: Services) -> None:
    """The proven rules that forward to an upstream the Gateway no longer has are checked
    again (refused, as a compilation refuses them), wherever they are; the others are not."""
    first = snapshot()
    edge = first.gateways[0]
    spare = dataclasses.replace(edge.upstreams[0], key="shop/spare")
    compile_snapshot(with_rules(first, edge.rules, upstreams=(*edge.upstreams, spare)), check)
    forward, direct = edge.rules
    broken_direct = broken_behind_the_memos_back(check, direct)
    # the spare upstream gone: no rule forwards to it, none is checked again
    compile_snapshot(with_rules(first, (forward, broken_direct)), check)
    assert check.proven is not None
    assert check.proven.kept["shop/edge"].by_id.get(id(forward)) is forward
    # the app upstream gone: the rule forwarding to it is refused, although proven
    with pytest.raises(KeyError, match="shop/app"):
        compile_snapshot(with_rules(first, (forward, direct), upstreams=(spare,)), check)


def test_a_configuration_the_workers_serve_is_proven(check: Services) -> None:
    """``prove`` (a first configuration every worker compiled) stands for a check: the next
    check skips its rules and looks at new ones."""
    first = snapshot()
    assert check.proven is not None
    check.proven.prove(first)
    rules = first.gateways[0].rules
    assert set(proven_ids(check)) == {id(rule) for rule in rules}
    broken = broken_behind_the_memos_back(check, rules[1])
    compile_snapshot(with_rules(first, (rules[0], broken)), check)
    with pytest.raises(Exception, match=r"unterminated|missing"):
        compile_snapshot(with_rules(first, (*rules, bad_regex(rules[0]))), check)


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
