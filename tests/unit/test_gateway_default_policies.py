"""A Gateway's own policies are its ``default_policies`` and no rule's (IR schema 4): a rule
carries its own policies, and a worker gives it the Gateway's of the types it has none of,
as filters of its own (a filter may keep state, an extAuth decision cache, that must not be
shared between rules). Editing the Gateway's policies changes no rule, and a worker makes
the rules' chains again with the filters of their own policies kept."""

from __future__ import annotations

import asyncio

import pytest

from propylon.config import load_text
from propylon.ir.delta import reuse_unchanged
from propylon.runtime.compile import Services, compile_snapshot, compiling
from propylon.translate import translate
from tests.support.resources import shop_gateway_yaml

CONFIG = shop_gateway_yaml('[{headers: {response: {set: {x-gw: "1"}}}}]') + """---
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


def _snapshot(config: str):  # type: ignore[no-untyped-def]
    loaded = load_text(config)
    assert not loaded.errors
    return translate(loaded.resources)


def _filters(runtime, gateway: str):  # type: ignore[no-untyped-def]
    router = runtime.gateways[gateway].router
    return [router.match("x", "GET", path, None).chain.filters for path in ("/a", "/b", "/c")]


def test_rules_carry_their_own_policies_and_the_gateway_s_apply_where_they_have_none() -> None:
    gateway = _snapshot(CONFIG).gateways[0]
    first, second, third = (rule.policies for rule in gateway.rules)
    assert first == second == ()
    assert [p.type for p in gateway.default_policies] == ["headers"]
    assert [p.type for p in third] == ["headers"]
    assert third[0].spec["response"]["set"] == {"x-rule": "1"}


def test_each_rule_gets_filters_of_its_own_and_keeps_them_across_a_gateway_edit() -> None:
    loop = asyncio.new_event_loop()
    try:
        services = Services.scratch(loop)
        before = _snapshot(CONFIG)
        runtime = compile_snapshot(before, services)
        a, b, c = _filters(runtime, "shop/edge")
        assert len(a) == len(b) == len(c) == 1
        assert a[0] is not b[0]  # the Gateway's headers policy, a filter per rule
        assert a[0].response_edits is b[0].response_edits  # what never changes, made once
        assert c[0].__class__ is a[0].__class__ and c[0] is not a[0]
        edited = _snapshot(CONFIG.replace('x-gw: "1"', 'x-gw: "2"'))
        assert [r.policies for r in edited.gateways[0].rules] == [
            r.policies for r in before.gateways[0].rules]
        after = compile_snapshot(reuse_unchanged(edited, before), services)
        a2, b2, c2 = _filters(after, "shop/edge")
        assert a2[0] is not a[0] and a2[0] is not b2[0]  # the new Gateway policy's filters
        assert c2[0] is c[0]  # the rule's own filter, kept
    finally:
        loop.close()


def _routes(runtime, gateway: str):  # type: ignore[no-untyped-def]
    router = runtime.gateways[gateway].router
    return [router.match("x", "GET", path, None) for path in ("/a", "/b", "/c")]


def test_a_gateway_edit_keeps_every_rule_s_routes_which_take_their_chains_at_commit() -> None:
    """A Gateway's policies edited: each rule keeps its compiled routes (and router entries),
    which take their new chains only when the compilation is committed: the runtime serving
    until then serves its chains, and a compilation refused after it compiled (``compiling``'s
    block raising: a worker's listener or certificate) leaves them as they were."""
    loop = asyncio.new_event_loop()
    try:
        services = Services.scratch(loop)
        before = _snapshot(CONFIG)
        routes = _routes(compile_snapshot(before, services), "shop/edge")
        chains = [route.chain for route in routes]

        refused = reuse_unchanged(_snapshot(CONFIG.replace('x-gw: "1"', 'x-gw: "9"')), before)
        with pytest.raises(OSError), compiling(refused, services) as runtime:
            assert _routes(runtime, "shop/edge") == routes
            raise OSError("address already in use")
        assert [route.chain for route in routes] == chains

        text = CONFIG.replace('x-gw: "1"', 'x-gw: "2"')
        edited = reuse_unchanged(_snapshot(text), before)
        with compiling(edited, services) as runtime:
            assert _routes(runtime, "shop/edge") == routes  # the very objects
            assert [route.chain for route in routes] == chains  # not yet
        a, b, c = (route.chain for route in routes)
        assert a is not chains[0] and b is not chains[1] and c is chains[2]  # c: its own
        scratch = compile_snapshot(_snapshot(text), Services.scratch(loop))
        assert _chains(runtime) == _chains(scratch)
    finally:
        loop.close()


def _chains(runtime) -> list[list[tuple[object, ...]]]:  # type: ignore[no-untyped-def]
    """Each probe's filters, as (class, source, the headers a headers filter adds): what
    serves it."""
    return [[(type(f).__name__, f.source, getattr(getattr(f, "response_edits", None),
                                                   "additions", None)) for f in filters]
            for filters in _filters(runtime, "shop/edge")]


GATEWAY_POLICIES = 'policies: [{headers: {response: {set: {x-gw: "1"}}}}]'
# (the Gateway's policies then, whether they change what the rule's own policy is)
VERSIONS = [
    ('policies: [{headers: {response: {set: {x-gw: "2"}}}}]', False),  # edited
    ('policies: [{headers: {response: {set: {x-gw: "2"}}}}, {cors: {allowOrigins: ["*"]}}]',
     False),  # a type added
    ('policies: [{enforced: true, headers: {response: {set: {x-gw: "2"}}}}]', True),
    ('policies: [{headers: {response: {set: {x-gw: "3"}}}}]', True),  # not enforced again
    ("policies: []", False),  # none left
    ('policies: [{headers: {response: {set: {x-gw: "1"}}}}]\n'
     "  tracing: {otlpEndpoint: http://127.0.0.1:9}", False),  # tracing: every chain anew
    (GATEWAY_POLICIES, False),
]


def test_gateway_level_changes_serve_what_a_compilation_from_scratch_serves() -> None:
    """Each Gateway-level change in turn (a policy edited, a type added, made enforced and
    not again, all removed, tracing added and removed), from one worker's last compilation:
    the same filters, in the same order, as a worker that compiles the version whole; the
    rule whose own headers policy wins keeps its filter unless its own policies changed
    (its headers lost to the enforced one, then won again), in a new chain when the
    tracing filter ahead of it changed."""
    assert GATEWAY_POLICIES in CONFIG
    loop = asyncio.new_event_loop()
    try:
        worker = Services.scratch(loop)
        last = _snapshot(CONFIG)
        own = _filters(compile_snapshot(last, worker), "shop/edge")[2][-1]
        for policies, rule_changed in VERSIONS:
            text = CONFIG.replace(GATEWAY_POLICIES, policies)
            edited = reuse_unchanged(_snapshot(text), last)
            runtime = compile_snapshot(edited, worker)
            scratch = compile_snapshot(_snapshot(text), Services.scratch(loop))
            assert _chains(runtime) == _chains(scratch), policies
            now = _filters(runtime, "shop/edge")[2]
            assert (own in now) == (not rule_changed), policies
            own, last = now[-1], edited
    finally:
        loop.close()
