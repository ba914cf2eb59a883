"""Filter chains kept from one compilation to the next, for the rules that did not change.

Building a rule's filters is most of what compiling a large configuration costs. A rule that
is the very object of the previous version (``ir.reuse_unchanged`` and the worker's delta
decoding keep the objects of unchanged rules) gets the chain built then, with the same filter
objects. Identity, not equality, is the key: equal policies of two rules keep their own
filters, as a compilation from scratch gives them.

A rule's chain is its Gateway's ``ChainHead`` (its tracing filter, and its default policies
for the types the rule has none of: ``ir.effective_policies``) and the rule's own policies.
When the head changes (the Gateway's policies were edited), an unchanged rule's chain is made
again with the filters of its own policies kept: only the Gateway's are built, one per rule
that applies them.

Some filters may be built from the snapshot's Consumers (``FilterEnv.snapshot``;
``PolicyType.sees_consumers``: plugins' filters, unless the plugin says otherwise): when those
change, the chains holding one are made again (``stale``), with the filters of the rule's own
policies kept when it is only the head's that may see them; the others are kept. The API key
and basic auth filters read them on each request from the worker's
``filters._common.ConsumerDirectory`` instead, so their chains are kept.
Only the chains of the last successful compilation are kept, so the memo holds one
configuration's filters, which its runtime holds anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from propylon.ir import PolicyIR, RuleIR
from propylon.policies.plugins import policy_types
from propylon.runtime.compiled import FilterChain
from propylon.runtime.memo_journal import Journal


class ChainHead:
    """What a Gateway's rules' chains hold besides their own policies' filters: the tracing
    filter, first, and the Gateway's ``default_policies``, for the types a rule has none of.
    One per Gateway, the same object from one compilation to the next while both are the
    same (``ChainMemo.gateway``): the memos compare it by identity. A head that replaces
    ``previous`` with the same tracing filter knows which types' default policies changed
    (``changed``): the chain of a rule with its own policy of each is still its chain."""

    __slots__ = ("changed", "defaults", "previous", "tracing")

    def __init__(self, tracing: Any, defaults: tuple[PolicyIR, ...],
                 previous: ChainHead | None = None) -> None:
        self.tracing = tracing
        self.defaults = defaults
        self.previous = previous
        self.changed: frozenset[str] | None = None  # None: every chain changed
        if previous is not None:
            previous.previous = None  # one step is all ``keeps`` looks back
            if previous.tracing is tracing:
                old = {policy.type: policy for policy in previous.defaults}
                new = {policy.type: policy for policy in defaults}
                self.changed = frozenset(kind for kind in old.keys() | new.keys()
                                         if old.get(kind) != new.get(kind))

    def keeps(self, old: ChainHead, own: tuple[PolicyIR, ...]) -> bool:
        """Whether a chain made after ``old`` for a rule of ``own`` policies is the chain
        made after this head: it replaced ``old`` changing only default policies of types
        the rule has its own of."""
        changed = self.changed
        if self.previous is not old or changed is None:
            return False
        return not changed or changed <= {policy.type for policy in own}


# a rule, the head its chain was made after, the chain, the filters of the rule's own policies
_Entry = tuple[RuleIR, ChainHead, FilterChain, tuple[Any, ...]]
# makes a rule's chain after the head, from its own filters when they are kept (None: build
# them); gives the chain and those filters
_Build = Callable[["tuple[Any, ...] | None"], tuple[FilterChain, tuple[Any, ...]]]


class ChainMemo:
    """Kept per Gateway (``gateway()`` says whose rules come next): a compilation that reuses
    a Gateway's unchanged rules by position (``compile.py``) carries that Gateway's chains over
    whole, without a look at each rule."""

    def __init__(self) -> None:
        self.kept: dict[str, dict[int, _Entry]] = {}
        self.made: dict[str, dict[int, _Entry]] = {}
        self.heads: dict[str, ChainHead] = {}
        self.made_heads: dict[str, ChainHead] = {}
        self.consumers: tuple[Any, ...] | None = None  # the last committed compilation's
        self._consumers: tuple[Any, ...] | None = None  # this compilation's
        # the rules whose chains this compilation makes again although kept, the Consumers
        # having changed (``begin``): id -> whether the filters of its own policies too;
        # each is taken out once made
        self.stale: dict[int, bool] = {}
        self._kept: dict[int, _Entry] = {}  # the Gateway being compiled's
        self._made: dict[int, _Entry] = {}
        self._journal = Journal()  # changes to a dictionary of ``kept`` taken over (``carry``)
        self._gateway = ""

    def begin(self, consumers: tuple[Any, ...]) -> None:
        """A compilation starts, of a snapshot with these Consumers: the chains of the last
        one are kept; when the Consumers changed, those holding a filter that may see them
        are marked ``stale`` (the compiled routes are kept, and take their new chains like
        those of a Gateway whose policies were edited)."""
        self.abort()
        self._consumers = consumers
        self.stale = {}
        if consumers != self.consumers:
            for entries in self.kept.values():
                heads: dict[int, bool] = {}  # by head: whether its defaults may see them
                for key, entry in entries.items():
                    head = entry[1]
                    seen = heads.get(id(head))
                    if seen is None:
                        seen = heads[id(head)] = sees_consumers(head.defaults)
                    if sees_consumers(entry[0].policies):
                        self.stale[key] = True
                    elif seen:
                        self.stale[key] = False
        self.made, self.made_heads = {}, {}

    def stale_in(self, rules: Iterable[RuleIR]) -> bool:
        """Whether the chain of one of ``rules`` is to be made again (``stale``)."""
        stale = self.stale
        return bool(stale) and any(id(rule) in stale for rule in rules)

    def gateway(self, gateway: str, tracing: Any, defaults: tuple[PolicyIR, ...]) -> ChainHead:
        """``gateway``'s rules come next, after this tracing filter and with these default
        policies: their head, the last one while both are the same."""
        self._kept = self.kept.get(gateway, {})
        self._made = self.made.setdefault(gateway, {})
        self._gateway = gateway
        head = self.heads.get(gateway)
        if head is None or head.tracing is not tracing or head.defaults != defaults:
            head = ChainHead(tracing, defaults, head)
        self.made_heads[gateway] = head
        return head

    def carry(self) -> None:
        """Keep every chain of the Gateway's last compilation (its unchanged rules' among
        them), as if each had been asked for: its dictionary is taken over, not copied
        (``memo_journal.py``)."""
        taken = self._kept
        for key, entry in self._made.items():
            self._journal.set(taken, key, entry)
        self._made = self.made[self._gateway] = taken

    def chain(self, rule: RuleIR, head: ChainHead, build: _Build) -> FilterChain:
        """``rule``'s chain after ``head``: the last one, when it still is (``keeps``), or
        one ``build`` makes (with the filters of the rule's own policies, when the rule is
        the one compiled last)."""
        key = id(rule)
        entry = self._made.get(key) or self._kept.get(key)
        if entry is None or entry[0] is not rule:
            entry = (rule, head, *build(None))
        elif key in self.stale:  # made again once
            entry = (rule, head, *build(None if self.stale.pop(key) else entry[3]))
        elif entry[1] is not head:
            if head.keeps(entry[1], rule.policies):
                entry = (rule, head, entry[2], entry[3])
            else:
                entry = (rule, head, *build(entry[3]))
        self._journal.put(self._made, key, entry, self._kept)
        return entry[2]

    def keep(self, rule: RuleIR, head: ChainHead, chain: FilterChain) -> bool:
        """Whether ``chain`` is still the one for ``rule`` after ``head`` (then it is kept
        for the next compilation, as ``chain`` would)."""
        key = id(rule)
        entry = self._made.get(key) or self._kept.get(key)
        if (entry is None or entry[2] is not chain or entry[0] is not rule
                or entry[1] is not head or key in self.stale):
            return False
        self._journal.put(self._made, key, entry, self._kept)
        return True

    def abort(self) -> None:
        """The compilation failed: what it changed in ``kept`` is undone."""
        self._journal.undo()

    def commit(self) -> None:
        """The compilation succeeded: its chains are the ones to keep."""
        self.consumers, self.stale = self._consumers, {}
        self._journal.forget()
        self.kept, self.made = self.made, {}
        self.heads, self.made_heads = self.made_heads, {}
        self._kept, self._made = {}, {}


def sees_consumers(policies: Iterable[PolicyIR]) -> bool:
    """Whether a filter of ``policies`` reads the snapshot's Consumers (an unknown type may)."""
    table = policy_types()
    return any((row := table.get(policy.type)) is None or row.sees_consumers
               for policy in policies)
