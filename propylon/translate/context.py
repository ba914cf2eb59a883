"""What the steps of one Gateway's translation share: inputs, the status book, and the set of
Routes/RouteTables found invalid *for this Gateway* (their rules get replaced)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from propylon.config import Forward, Gateway, PolicySections, Route, RouteTable
from propylon.ir import ForwardIR
from propylon.translate.inventory import Inventory
from propylon.translate.select import TableIndex
from propylon.translate.status import StatusBook

RouteLike = Route | RouteTable
# id of a policy item -> (that item, its sections' specs): the specs of the items the rules of
# one Gateway's translation share (``schema.shared_sections``), when they do not depend on the
# owner (``policies._specs``)
DumpedSections = dict[int, tuple[PolicySections, list[tuple[str, dict[str, Any]]]]]


@dataclass(slots=True)
class GatewayContext:
    gateway: Gateway
    inventory: Inventory
    status: StatusBook
    invalid: set[str] = field(default_factory=set)  # refs "Kind namespace/name"
    # (namespace of a rule's owner, Upstream key) -> why it may not be used, None if it may
    references: dict[tuple[str, str], str | None] = field(default_factory=dict)
    # (id of a rule's Forward, its owner's namespace) -> (that Forward, its IR)
    forwards: dict[tuple[int, str], tuple[Forward, ForwardIR]] = field(default_factory=dict)
    # id of a rule's policy item -> (that item, its sections' specs), when they are the same
    # for every owner (``policies._specs``)
    dumped_sections: DumpedSections = field(default_factory=dict)
    # Route ref -> the listener sections its rules are served on, for the Routes served on
    # some of the Gateway's listeners only (``Gateway.sections``)
    scopes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # while not None, every RouteTable a delegation selects is noted here (``memo.py``: a
    # Route's rules are kept while the tables it was made of are)
    tables_read: list[RouteTable] | None = None
    _tables: TableIndex | None = None

    def route_tables(self) -> TableIndex:
        """The inventory's RouteTables, indexed for delegation (made on first use)."""
        if self._tables is None:
            self._tables = TableIndex(self.inventory.tables)
        return self._tables

    def fail(self, owner: RouteLike, reason: str, *, field: str | None = None) -> None:
        """Mark ``owner`` Invalid (for this Gateway, so its rules are replaced); ``field`` is
        the offending node (``spec.rules[0].forward``), which locates the problem."""
        self.invalid.add(owner.ref)
        self.status.fail(owner.kind, owner.key, reason, field=field)

    def is_invalid(self, owner: RouteLike) -> bool:
        return owner.ref in self.invalid
