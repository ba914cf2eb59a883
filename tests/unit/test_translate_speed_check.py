"""The supervisor's check of what standalone just built does not build its filters again
(``runtime/check_memo.py``: vouched policies), and still refuses what it must; workers build
every filter."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from propylon import ir
from propylon.config import load_text
from propylon.runtime.check_memo import ProvenRules, vouched
from propylon.runtime.compile import Services, compile_snapshot
from propylon.standalone import build_from_resources
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
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def built(text: str = CONFIG) -> ir.SnapshotIR:
    loaded = load_text(text)
    assert not loaded.errors
    result = build_from_resources(loaded.resources, loaded.rejected)
    assert result.snapshot is not None, result.errors
    return result.snapshot


def check(loop: asyncio.AbstractEventLoop) -> Services:
    services = Services.scratch(loop)
    services.proven = ProvenRules()
    return services


def with_policy(snapshot: ir.SnapshotIR, policy: ir.PolicyIR) -> ir.SnapshotIR:
    rules = snapshot.gateways[0].rules
    rule = dataclasses.replace(rules[0], policies=(policy,))
    gateway = dataclasses.replace(snapshot.gateways[0], rules=(rule, *rules[1:]))
    return dataclasses.replace(snapshot, gateways=(gateway,))


def test_the_policies_of_the_last_build_are_vouched_by_object() -> None:
    first = built()
    policies = first.gateways[0].rules[0].policies
    assert policies and vouched(policies)
    assert not vouched((dataclasses.replace(policies[0]),))  # equal, not the object built
    built(CONFIG.replace('x-a: "1"', 'x-a: "2"'))
    assert not vouched(policies)  # only the last build's


def test_the_check_refuses_a_policy_not_built_that_cannot_be(
        loop: asyncio.AbstractEventLoop) -> None:
    snapshot = built()
    compile_snapshot(snapshot, check(loop))
    bad = ir.PolicyIR("headers", {"response": {"set": {"x-a": {"no": "such"}}}}, "Route shop/r")
    with pytest.raises(Exception, match="headers"):
        compile_snapshot(with_policy(snapshot, bad), check(loop))


def test_workers_build_vouched_filters(loop: asyncio.AbstractEventLoop) -> None:
    snapshot = built()
    runtime = compile_snapshot(snapshot, Services.scratch(loop))
    router = runtime.gateways["shop/edge"].router
    found = router.match("x", "GET", "/a/1", _NoHeaders())
    assert found is not None and found.chain.filters != ()


class _NoHeaders:
    def header(self, name: str) -> str | None:
        return None

    def query_param(self, name: str) -> str | None:
        return None
