"""Filter chains kept from one compilation to the next, for the rules that did not change.

Building a rule's filters is most of what compiling a large configuration costs. A rule whose
``policies`` tuple is the very object of the previous version (``ir.reuse_unchanged`` and the
worker's delta decoding keep the objects of unchanged rules) gets the chain built then, with
the same filter objects. Identity, not equality, is the key: equal policies of two rules keep
their own filters, as a compilation from scratch gives them.

Some filters see the snapshot's Consumers (``FilterEnv.snapshot``;
``PolicyType.sees_consumers``: the API key and basic auth filters, and plugins'): when those
change, the chains holding one are not reused, the others are. Only the chains of the last
successful compilation are kept, so the memo holds one configuration's filters, which its
runtime holds anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from propylon.ir import PolicyIR
from propylon.policies.plugins import policy_types
from propylon.runtime.compiled import FilterChain
from propylon.runtime.memo_journal import Journal

_Entry = tuple[tuple[PolicyIR, ...], Any, FilterChain]  # policies, first filter, chain


class ChainMemo:
    """Kept per Gateway (``gateway()`` says whose rules come next): a compilation that reuses
    a Gateway's unchanged rules by position (``compile.py``) carries that Gateway's chains over
    whole, without a look at each rule."""

    def __init__(self) -> None:
        self.kept: dict[str, dict[tuple[int, int], _Entry]] = {}
        self.made: dict[str, dict[tuple[int, int], _Entry]] = {}
        self.consumers: tuple[Any, ...] | None = None
        self.last_kept = False  # this compilation holds the last one's chains (``begin``)
        self._kept: dict[tuple[int, int], _Entry] = {}  # the Gateway being compiled's
        self._made: dict[tuple[int, int], _Entry] = {}
        self._journal = Journal()  # changes to a dictionary of ``kept`` taken over (``carry``)
        self._gateway = ""

    def begin(self, consumers: tuple[Any, ...]) -> None:
        """A compilation starts, of a snapshot with these Consumers: the chains of the last
        one are kept, but those that see the Consumers when these changed (``last_kept``
        says whether every chain was kept)."""
        self.abort()
        self.last_kept = True
        if consumers != self.consumers:
            before = sum(map(len, self.kept.values()))
            self.kept = {gateway: {key: entry for key, entry in entries.items()
                                   if not sees_consumers(entry[0])}
                         for gateway, entries in self.kept.items()}
            self.last_kept = before == sum(map(len, self.kept.values()))
        self.consumers = consumers
        self.made = {}

    def gateway(self, gateway: str) -> None:
        self._kept = self.kept.get(gateway, {})
        self._made = self.made.setdefault(gateway, {})
        self._gateway = gateway

    def carry(self) -> None:
        """Keep every chain of the Gateway's last compilation (its unchanged rules' among
        them), as if each had been asked for: its dictionary is taken over, not copied
        (``memo_journal.py``)."""
        taken = self._kept
        for key, entry in self._made.items():
            self._journal.set(taken, key, entry)
        self._made = self.made[self._gateway] = taken

    def chain(self, policies: tuple[PolicyIR, ...], first: Any,
              build: Callable[[], FilterChain]) -> FilterChain:
        key = (id(policies), id(first))
        entry = self._made.get(key) or self._kept.get(key)
        if entry is None or entry[0] is not policies or entry[1] is not first:
            entry = (policies, first, build())
        self._journal.put(self._made, key, entry, self._kept)
        return entry[2]

    def keep(self, policies: tuple[PolicyIR, ...], first: Any, chain: FilterChain) -> bool:
        """Whether ``chain`` is still the one for ``policies`` after ``first`` (then it is
        kept for the next compilation, as ``chain`` would)."""
        key = (id(policies), id(first))
        entry = self._made.get(key) or self._kept.get(key)
        if (entry is None or entry[2] is not chain or entry[0] is not policies
                or entry[1] is not first):
            return False
        self._journal.put(self._made, key, entry, self._kept)
        return True

    def abort(self) -> None:
        """The compilation failed: what it changed in ``kept`` is undone."""
        self._journal.undo()

    def commit(self) -> None:
        """The compilation succeeded: its chains are the ones to keep."""
        self._journal.forget()
        self.kept, self.made = self.made, {}
        self._kept, self._made = {}, {}


def sees_consumers(policies: Iterable[PolicyIR]) -> bool:
    """Whether a filter of ``policies`` reads the snapshot's Consumers (an unknown type may)."""
    table = policy_types()
    return any((row := table.get(policy.type)) is None or row.sees_consumers
               for policy in policies)
