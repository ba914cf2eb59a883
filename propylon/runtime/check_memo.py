"""The rules a configuration check compiled without error, for the next check to skip.

The supervisor compiles every new version once before any worker gets it
(``Supervisor.check``) and throws the result away: only an error matters. What can fail in
compiling a rule is the rule's own: its filters (``ChainMemo`` keeps them), its routes'
upstreams, and its matches in the router (an unknown path kind, a regex that does not
compile, a condition setting both a value and a regex, each about one entry). So a rule that
is the very object a check passed before (``ir.reuse_unchanged`` keeps the objects of
unchanged rules) is known to compile, as long as the rest of its Gateway (listeners,
upstreams, tracing; not its default policies, which the check builds for the Gateway's 404
whatever the rules) and the snapshot's Consumers are equal too (or none of its rules'
filters sees them); the check leaves it out of the router it builds. When the
rules at both ends are the very objects proven at the same places (``changed_span``), they
are skipped without a look: only those between are looked up. Workers compile everything
(their result serves), keeping what did not change (``route_memo.py``).

A check also skips the filters of a rule whose policies are all *vouched*: objects this process
built without error just before (standalone's policy check builds every policy of the snapshot
it translated, ``standalone.contain_unbuildable_policies``), of types whose building reads
nothing but the spec, so building them again gives the same verdict. At start, that check and
the supervisor's are of the same snapshot: 10,000 headers policies were built twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from propylon.ir import ForwardIR, GatewayIR, PolicyIR, RuleIR
from propylon.ir.codec import same_ends
from propylon.runtime.chain_memo import sees_consumers
from propylon.runtime.memo_journal import Journal


class _Proven:
    """The rules of one Gateway a check passed, in their order and by id, with the rest of
    the Gateway they were checked in."""

    __slots__ = ("by_id", "context", "rules")

    def __init__(self, context: GatewayIR, rules: tuple[RuleIR, ...],
                 by_id: dict[int, RuleIR]) -> None:
        self.context = context
        self.rules = rules
        self.by_id = by_id  # each entry keeps its rule, so an id is never another's


class ProvenRules:
    def __init__(self) -> None:
        self.kept: dict[str, _Proven] = {}
        self.made: dict[str, _Proven] = {}
        self.consumers: tuple[Any, ...] | None = None
        self._kept: dict[int, RuleIR] = {}  # the Gateway being checked's, proven before
        self._made: dict[int, RuleIR] = {}
        # the last check's rules of the Gateway are taken over, not copied: what this check
        # set or removed there (undone if it fails, ``abort``), and the rules it removed,
        # still known
        self._journal = Journal()
        self._carried: dict[int, RuleIR] = {}

    def begin(self, consumers: tuple[Any, ...]) -> None:
        """A check starts, of a snapshot with these Consumers: when they changed, the Gateways
        with a rule whose filters see them are checked whole again."""
        self.abort()
        if consumers != self.consumers:
            self.kept = {key: proven for key, proven in self.kept.items()
                         if not any(sees_consumers(rule.policies) for rule in proven.rules)}
        self.consumers = consumers
        self.made = {}

    def gateway(self, gateway: GatewayIR) -> tuple[int, int, int] | None:
        """Note ``gateway``, whose rules come next: the span of them that was not proven as
        it is now, as ``changed_span`` gives it, when the rest of the Gateway is the same as
        last time (otherwise None: every rule is checked). The rules before and after it are
        the very objects proven at the same place (``ir.reuse_unchanged``): proven still."""
        rest = dataclasses.replace(gateway, rules=(), default_policies=())
        last = self.kept.get(gateway.key)
        self._carried = {}
        if last is None or last.context != rest:
            self._kept, self._made = {}, {}
            self.made[gateway.key] = _Proven(rest, gateway.rules, self._made)
            return None
        start, old_stop, new_stop = changed_span(gateway.rules, last.rules)
        taken = last.by_id  # less the rules no longer there
        for rule in last.rules[start:old_stop]:
            if self._journal.pop(taken, id(rule)) is not None:
                self._carried[id(rule)] = rule
        self._kept = self._made = taken
        self.made[gateway.key] = _Proven(rest, gateway.rules, taken)
        return start, old_stop, new_stop

    def known(self, rule: RuleIR) -> bool:
        """Whether ``rule`` was proven in the Gateway ``gateway()`` noted."""
        return self._kept.get(id(rule)) is rule or self._carried.get(id(rule)) is rule

    def add(self, rule: RuleIR) -> None:
        self._journal.put(self._made, id(rule), rule, self._kept)

    def abort(self) -> None:
        """The check failed: what it changed in ``kept`` is undone."""
        self._journal.undo()

    def commit(self) -> None:
        """The check passed: its rules are proven for the next one."""
        self._journal.forget()
        self.kept, self.made = self.made, {}
        self._kept, self._made = {}, {}
        self._carried = {}


def changed_span(rules: Sequence[RuleIR], old: Sequence[RuleIR]) -> tuple[int, int, int]:
    """Where ``rules`` differ from ``old``: ``(start, old_stop, new_stop)`` such that
    ``rules[:start]`` and ``rules[new_stop:]`` are the very objects of ``old[:start]`` and
    ``old[old_stop:]``; what is between changed (compared by identity, in C)."""
    start, end = same_ends(rules, old)
    return start, len(old) - end, len(rules) - end


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
