"""The translator's input, sorted and indexed by kind, so file order never matters.

Resources are sorted by ``namespace/name`` within each kind. Keys are expected to be unique
(the loader reports duplicates); if two resources share a key anyway, the one whose JSON
sorts first is kept, so the choice still does not depend on input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from propylon.config import Gateway, Policy, Resource, Route, RouteTable, Upstream

R = TypeVar("R", bound=Resource)


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
    routes = _sorted(resources, Route)
    by_namespace: dict[str, list[Route]] = {}
    for route in routes:
        by_namespace.setdefault(route.metadata.namespace, []).append(route)
    return Inventory(
        gateways=_sorted(resources, Gateway),
        routes=routes,
        tables=_sorted(resources, RouteTable),
        upstreams={u.key: u for u in _sorted(resources, Upstream)},
        policies=_sorted(resources, Policy),
        routes_by_namespace={ns: tuple(found) for ns, found in by_namespace.items()},
    )


def _sorted(resources: Sequence[Resource], cls: type[R]) -> tuple[R, ...]:
    by_key: dict[str, R] = {}
    for resource in resources:
        if isinstance(resource, cls):
            kept = by_key.setdefault(resource.key, resource)
            if kept is not resource and resource.model_dump_json() < kept.model_dump_json():
                by_key[resource.key] = resource  # JSON only for a key met twice
    return tuple(by_key[key] for key in sorted(by_key))
