"""Selection: which Routes a Gateway serves, which RouteTables a delegation reaches.

A selector's ``namespaces`` default to the selecting resource's own namespace (Gateway API's
``Same``); ``["*"]`` admits every namespace. ``matchLabels`` must all be equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from propylon.config import Gateway, Resource, Route, RouteTable, Selector


def selector_namespaces(selector: Selector, own_namespace: str) -> list[str]:
    """The namespaces ``selector`` names (``*``: every one), its owner's by default."""
    return selector.namespaces if selector.namespaces is not None else [own_namespace]


def admits_namespace(selector: Selector, namespace: str, own_namespace: str) -> bool:
    names = selector_namespaces(selector, own_namespace)
    return "*" in names or namespace in names


def has_labels(resource: Resource, wanted: Iterable[tuple[str, str]]) -> bool:
    labels = resource.metadata.labels
    return all(labels.get(k) == v for k, v in wanted)


def selector_matches(selector: Selector, resource: Resource, own_namespace: str) -> bool:
    return (admits_namespace(selector, resource.namespace, own_namespace)
            and has_labels(resource, selector.match_labels.items()))


def select_routes(gateway: Gateway, routes: Sequence[Route],
                  by_namespace: Mapping[str, Sequence[Route]] | None = None) -> list[Route]:
    """The Routes ``gateway`` serves, in key order (as ``selector_matches`` selects, the
    selector read once, not once per Route). ``by_namespace``: ``routes`` of each namespace,
    in the same order (``Inventory.routes_by_namespace``)."""
    selector = gateway.spec.route_selector
    names = selector_namespaces(selector, gateway.namespace)
    wanted = tuple(selector.match_labels.items())
    admitted: Sequence[Route]
    if "*" in names:
        admitted = routes
    elif len(names) == 1 and by_namespace is not None:
        admitted = by_namespace.get(names[0], ())
    else:
        namespaces = set(names)
        admitted = [r for r in routes if r.metadata.namespace in namespaces]
    return [r for r in admitted if has_labels(r, wanted)] if wanted else list(admitted)


def select_route_tables(
    selector: Selector, own_namespace: str, tables: Sequence[RouteTable]
) -> list[RouteTable]:
    """The RouteTables a ``delegate`` selector of a resource in ``own_namespace`` reaches."""
    return [t for t in tables if selector_matches(selector, t, own_namespace)]


class TableIndex:
    """RouteTables by each of their labels: a ``delegate`` selector with ``matchLabels`` looks
    only through the tables holding its first label (1,000 delegating rules each scanning
    10,000 tables was most of a delegated configuration's translation). Selects as
    ``select_route_tables`` does, in the same order."""

    def __init__(self, tables: Sequence[RouteTable]) -> None:
        self.tables = tables
        self.by_label: dict[tuple[str, str], list[RouteTable]] = {}
        for table in tables:
            for label in table.metadata.labels.items():
                self.by_label.setdefault(label, []).append(table)

    def select(self, selector: Selector, own_namespace: str) -> list[RouteTable]:
        labels = selector.match_labels
        pool: Sequence[RouteTable] = (
            self.by_label.get(next(iter(labels.items())), ()) if labels else self.tables)
        return select_route_tables(selector, own_namespace, pool)


def gateway_admits(gateway: Gateway, namespace: str) -> bool:
    """Whether rules served by ``gateway`` may reference resources in ``namespace``."""
    selector = gateway.spec.route_selector
    return namespace == gateway.namespace or admits_namespace(
        selector, namespace, gateway.namespace
    )
