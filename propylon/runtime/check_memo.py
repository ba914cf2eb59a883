"""The rules a configuration check compiled without error, for the next check to skip.

The supervisor compiles every new version once before any worker gets it (``Supervisor.check``)
and throws the result away: only an error matters. What can fail in compiling a rule is the
rule's own: its filters (``ChainMemo`` keeps them), its routes' upstreams, and its matches in
the router (an unknown path kind, a regex that does not compile, a condition setting both a
value and a regex, each about one entry). So a rule that is the very object a check passed
before (``ir.reuse_unchanged`` keeps the objects of unchanged rules) is known to compile, as
long as the rest of its Gateway (listeners, upstreams, default policies, tracing) and the
snapshot's Consumers are equal too; the check then only looks up its upstreams and leaves it
out of the router it builds. Workers compile everything: their result serves.

A check also skips the filters of a rule whose policies are all *vouched*: objects this process
built without error just before (standalone's policy check builds every policy of the snapshot
it translated, ``standalone.contain_unbuildable_policies``), of types whose building reads
nothing but the spec, so building them again gives the same verdict. At start, that check and
the supervisor's are of the same snapshot: 10,000 headers policies were built twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from propylon.ir import ForwardIR, GatewayIR, PolicyIR, RuleIR


class ProvenRules:
    def __init__(self) -> None:
        # rule id -> (rule, its Gateway): proven in that Gateway, whose upstreams it found
        self.kept: dict[int, tuple[RuleIR, str]] = {}
        self.made: dict[int, tuple[RuleIR, str]] = {}
        self.context: dict[str, GatewayIR] = {}  # each Gateway, without its rules
        self.made_context: dict[str, GatewayIR] = {}
        self.consumers: tuple[Any, ...] | None = None

    def begin(self, consumers: tuple[Any, ...]) -> None:
        """A check starts, of a snapshot with these Consumers."""
        if consumers != self.consumers:
            self.kept, self.context = {}, {}
        self.consumers = consumers
        self.made, self.made_context = {}, {}

    def gateway(self, gateway: GatewayIR) -> bool:
        """Note ``gateway``; whether the rules proven with it before still are."""
        rest = dataclasses.replace(gateway, rules=())
        self.made_context[gateway.key] = rest
        return self.context.get(gateway.key) == rest

    def known(self, rule: RuleIR, gateway: str) -> bool:
        """Whether ``rule`` was proven in ``gateway``, whose context (``gateway()``) is the
        same since: then the upstreams it names are still there too."""
        entry = self.kept.get(id(rule))
        return entry is not None and entry[0] is rule and entry[1] == gateway

    def add(self, rule: RuleIR, gateway: str) -> None:
        self.made[id(rule)] = (rule, gateway)

    def commit(self) -> None:
        """The check passed: its rules are proven for the next one."""
        self.kept, self.made = self.made, {}
        self.context, self.made_context = self.made_context, {}


def upstreams_of(rule: RuleIR) -> list[str]:
    action = rule.action
    if not isinstance(action, ForwardIR):
        return []
    keys = [backend.upstream for backend in action.backends]
    return [*keys, action.mirror.upstream] if action.mirror is not None else keys


# The vouched policies, by object (each entry keeps its policy, so an id is never another
# object's); replaced as a whole by each ``vouch`` (the last build's).
_VOUCHED: list[dict[int, PolicyIR]] = [{}]


def vouch(policies: Iterable[PolicyIR]) -> None:
    """``policies`` (and no others) built without error in this process, reading only their
    spec: a check need not build them again."""
    _VOUCHED[0] = {id(policy): policy for policy in policies}


def vouched(policies: tuple[PolicyIR, ...]) -> bool:
    known = _VOUCHED[0]
    return all(known.get(id(policy)) is policy for policy in policies)
