"""``ir.reuse_unchanged``: every rule and status of the new version equal to one of the previous
version is that object, whatever changed around it (rules added, removed, moved, edited)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from propylon import ir
from propylon.ir.delta import reuse_unchanged

GATEWAY = "a/edge"


def _rule(name: str, prefix: str | None = None) -> ir.RuleIR:
    return ir.RuleIR(f"route:a/{name}:0", f"Route a/{name}", None, (),
                     (ir.MatchIR(ir.PathMatchIR("prefix", prefix or f"/{name}")),),
                     ir.ForwardIR((ir.BackendIR("a/u", 1),)))


def _snapshot(rules: list[ir.RuleIR]) -> ir.SnapshotIR:
    gateway = ir.GatewayIR(GATEWAY, (ir.ListenerIR("web", 8080),), tuple(rules), ())
    statuses = tuple(ir.StatusIR("Route", rule.route.split(" ")[1], "Accepted",
                                 gateways=(GATEWAY,)) for rule in rules)
    return ir.SnapshotIR(gateways=(gateway,), statuses=statuses)


def _copy(rule: ir.RuleIR) -> ir.RuleIR:
    return dataclasses.replace(rule)  # equal, another object


@pytest.mark.parametrize("seed", range(20))
def test_equal_rules_and_statuses_become_the_previous_objects(seed: int) -> None:
    rng = random.Random(seed)
    old = [_rule(f"r{i}") for i in range(50)]
    new: list[ir.RuleIR] = []
    for rule in old:
        roll = rng.random()
        if roll < 0.1:
            continue  # removed
        if roll < 0.2:
            new.append(_rule(rule.route.split("/")[1], "/edited"))  # same id, other content
        elif roll < 0.35:
            new.append(_copy(rule))  # equal, not the same object
        else:
            new.append(rule)
        if rng.random() < 0.1:
            new.append(_rule(f"added{len(new)}"))
    if seed % 2:
        rng.shuffle(new)  # moved
    previous = _snapshot(old)
    got = reuse_unchanged(_snapshot(new), previous)
    by_id = {rule.id: rule for rule in old}
    assert got.gateways[0].rules == tuple(new)
    for rule, made in zip(got.gateways[0].rules, new, strict=True):
        was = by_id.get(rule.id)
        assert (rule is was) == (was == made), rule.id
    old_statuses = {(s.kind, s.key): s for s in previous.statuses}
    for status in got.statuses:
        was = old_statuses.get((status.kind, status.key))
        assert (status is was) == (was == status)
