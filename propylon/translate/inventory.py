"""The translator's input, sorted and indexed by kind, so file order never matters.

Resources are sorted by ``namespace/name`` within each kind. Keys are expected to be unique
(the loader reports duplicates); if two resources share a key anyway, the one whose JSON
sorts first is kept, so the choice still does not depend on input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from propylon.config import Gateway, Policy, Resource, Route, RouteTable, Upstream


@dataclass(frozen=True, slots=True)
class Inventory:
    gateways: tuple[Gateway, ...]
    routes: tuple[Route, ...]
    tables: tuple[RouteTable, ...]
    upstreams: dict[str, Upstream]  # by "namespace/name"
    policies: tuple[Policy, ...]
    # the Routes of each namespace, in key order: most Gateways select one namespace, and 50
    # Gateways each reading the namespace of 10,000 Routes was a tenth of translating a change
    routes_by_namespace: dict[str, tuple[Route, ...]]

    def find(self, kind: str, key: str) -> Resource | None:
        """The Gateway, Route, RouteTable or Upstream ``kind`` with ``key``, if any."""
        if kind == "Upstream":
            return self.upstreams.get(key)
        pool: Sequence[Resource] = {
            "Gateway": self.gateways,
            "Route": self.routes,
            "RouteTable": self.tables,
        }.get(kind, ())
        return next((r for r in pool if r.key == key), None)


def build_inventory(resources: Sequence[Resource]) -> Inventory:
    by_kind = _by_kind(resources)
    routes = cast("tuple[Route, ...]", by_kind[Route])
    by_namespace: dict[str, list[Route]] = {}
    for route in routes:
        by_namespace.setdefault(route.metadata.namespace, []).append(route)
    return Inventory(
        gateways=cast("tuple[Gateway, ...]", by_kind[Gateway]),
        routes=routes,
        tables=cast("tuple[RouteTable, ...]", by_kind[RouteTable]),
        upstreams={u.key: u for u in cast("tuple[Upstream, ...]", by_kind[Upstream])},
        policies=cast("tuple[Policy, ...]", by_kind[Policy]),
        routes_by_namespace={ns: tuple(found) for ns, found in by_namespace.items()},
    )


_KINDS: tuple[type[Resource], ...] = (Gateway, Route, RouteTable, Upstream, Policy)


def _by_kind(resources: Sequence[Resource]) -> dict[type[Resource], tuple[Resource, ...]]:
    """The resources of each of ``_KINDS`` in key order, in one pass over them (a pass per
    kind was a tenth of translating a change at 10,000 Routes)."""
    by_kind: dict[type[Resource], dict[str, Resource]] = {cls: {} for cls in _KINDS}
    for resource in resources:
        by_key = by_kind.get(type(resource))
        if by_key is None:  # a subclass of one of the kinds, or another kind
            cls = next((cls for cls in _KINDS if isinstance(resource, cls)), None)
            if cls is None:
                continue
            by_key = by_kind[cls]
        key = resource.key
        kept = by_key.setdefault(key, resource)
        if kept is not resource and resource.model_dump_json() < kept.model_dump_json():
            by_key[key] = resource  # JSON only for a key met twice
    return {cls: tuple([by_key[key] for key in sorted(by_key)])
            for cls, by_key in by_kind.items()}
