"""What the steps of one Gateway's translation share: inputs, the status book, and the set of
Routes/RouteTables found invalid *for this Gateway* (their rules get replaced)."""

from __future__ import annotations

from dataclasses import dataclass, field

from propylon.config import Gateway, Route, RouteTable
from propylon.translate.inventory import Inventory
from propylon.translate.select import TableIndex
from propylon.translate.status import StatusBook

RouteLike = Route | RouteTable


@dataclass(slots=True)
class GatewayContext:
    gateway: Gateway
    inventory: Inventory
    status: StatusBook
    invalid: set[str] = field(default_factory=set)  # refs "Kind namespace/name"
    # (namespace of a rule's owner, Upstream key) -> why it may not be used, None if it may
    references: dict[tuple[str, str], str | None] = field(default_factory=dict)
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
