"""The rules a configuration check compiled without error, for the next check to skip.

The supervisor compiles every new version once before any worker gets it
(``Supervisor.check``) and throws the result away: only an error matters. What can fail in
compiling a rule is the rule's own: its filters (``ChainMemo`` keeps them), its routes'
upstreams, and its matches in the router (an unknown path kind, a regex that does not
compile, a condition setting both a value and a regex, each about one entry). So a rule that
is the very object a check passed before (``ir.reuse_unchanged`` keeps the objects of
unchanged rules) is known to compile, as long as the upstreams it forwards to are still its
Gateway's and the snapshot's Consumers are equal too (or none of its rules' filters sees
them); the check leaves it out of the router it builds. Nothing else of the Gateway enters
a rule's compilation: its listeners, its upstreams' settings (the clusters), its tracing,
its trusted proxies and its default policies are compiled once per Gateway, by every check,
so an edit of one of them checks no rule again (at 10,000 Routes an Upstream's timeout
edited made every check of a gateway with two workers compile 40,000 rules: 0.5-0.7 s of
the supervisor's CPU). When the rules at both ends are the very objects proven at the same
places (``changed_span``), they are skipped without a look: only those between are looked
up. Workers compile everything (their result serves), keeping what did not change
(``route_memo.py``).

A configuration every worker compiled and serves is proven too (``prove``): at start the
workers' compilations are the check (``Supervisor.install_first``).

A check also skips the filters of a rule whose policies are all *vouched*: objects this process
built without error just before (standalone's policy check builds every policy of the snapshot
it translated, ``standalone.contain_unbuildable``), of types whose building reads
nothing but the spec, so building them again gives the same verdict. At start, that check and
the supervisor's are of the same snapshot: 10,000 headers policies were built twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from propylon.ir import ForwardIR, GatewayIR, PolicyIR, RuleIR, SnapshotIR
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
        it is now, as ``changed_span`` gives it. The rules before and after it are the very
        objects proven at the same place (``ir.reuse_unchanged``): proven still. None when
        every rule is to be looked up: the Gateway was not checked before, or an upstream
        it had is gone (the rules that forward to one are no longer proven)."""
        rest = dataclasses.replace(gateway, rules=(), default_policies=())
        last = self.kept.get(gateway.key)
        self._carried = {}
        if last is None:
            self._kept, self._made = {}, {}
            self.made[gateway.key] = _Proven(rest, gateway.rules, self._made)
            return None
        span = changed_span(gateway.rules, last.rules)
        taken = last.by_id  # less the rules no longer there
        for rule in last.rules[span[0]:span[1]]:
            if self._journal.pop(taken, id(rule)) is not None:
                self._carried[id(rule)] = rule
        gone = _gone_upstreams(last.context, rest)
        if gone:
            for rule in [r for r in taken.values() if not gone.isdisjoint(upstreams_of(r))]:
                self._journal.pop(taken, id(rule))
            self._carried = {key: rule for key, rule in self._carried.items()
                             if gone.isdisjoint(upstreams_of(rule))}
        self._kept = self._made = taken
        self.made[gateway.key] = _Proven(rest, gateway.rules, taken)
        return None if gone else span

    def prove(self, snapshot: SnapshotIR) -> None:
        """Every rule of ``snapshot`` compiled without error (every worker serves it): the
        next check skips them as if it had passed them itself."""
        self.abort()
        self.consumers = snapshot.consumers
        self.kept = {
            gateway.key: _Proven(dataclasses.replace(gateway, rules=(), default_policies=()),
                                 gateway.rules, {id(rule): rule for rule in gateway.rules})
            for gateway in snapshot.gateways}
        self.made, self._kept, self._made, self._carried = {}, {}, {}, {}

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


def _gone_upstreams(last: GatewayIR, now: GatewayIR) -> set[str]:
    """The keys of ``last``'s upstreams that ``now`` (the same Gateway) no longer has."""
    if last == now:
        return set()
    return {u.key for u in last.upstreams} - {u.key for u in now.upstreams}


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
