"""``translate``: resources -> a sealed ``SnapshotIR`` (pure and deterministic).

Inputs are sorted by kind and key first, so the order of files and documents never changes
the result or its version. Each Gateway is translated on its own (``gateway.py``); statuses
are collected for every Gateway, Route, RouteTable, Upstream and Policy.

``translate_with_issues`` also gives the problems behind the statuses as located
``ConfigError``s (``severity`` "error": the resource is Invalid; "warning": it is kept, e.g. a
shadowed rule), for ``propylon validate`` to print with ``file:line``. Given the documents
the loader rejected, it contains them (``containment.py``): they are Invalid, what can be
recovered of them is replaced or disabled, and everything else is translated as usual.

Kubernetes objects among the resources (Gateway API, Ingress) are first converted to
``propylon.dev/v1`` resources (``config/gatewayapi.py``), so files and the control plane
translate them the same way; their statuses are Gateway API conditions
(``gatewayapi_status.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Sequence
from dataclasses import dataclass

from propylon.config import ConfigError, Rejected, Resource
from propylon.config.gatewayapi import Expansion, expand_kubernetes
from propylon.ir import SnapshotIR, seal
from propylon.ir.delta import reuse_unchanged
from propylon.translate import memo, shadows
from propylon.translate.consumers import translate_consumers
from propylon.translate.containment import (
    plan_containment,
    record_containment,
    unattached_gateway_policies,
)
from propylon.translate.gateway import translate_gateway
from propylon.translate.gatewayapi_status import gateway_api_statuses, located_issues
from propylon.translate.inventory import Inventory, build_inventory
from propylon.translate.policies import index_policy_targets
from propylon.translate.status import StatusBook

# The last translation: rules and statuses equal to its own are given as its objects, whose
# encodings are kept (``ir.codec``), so sealing after a small change encodes only the change.
_LAST: list[SnapshotIR | None] = [None]

_UNUSED = {
    "Route": "not selected by any Gateway",
    "RouteTable": "not reached by delegation from any selected Route",
    "Upstream": "not referenced by any served rule",
}


@dataclass(frozen=True, slots=True)
class Translation:
    snapshot: SnapshotIR
    issues: tuple[ConfigError, ...]  # located problems behind the statuses, by file and line


@dataclass(frozen=True, slots=True)
class Booked:
    """A translation before its statuses are made (``finish``): the snapshot without them,
    and the book every step reported to."""

    snapshot: SnapshotIR  # statuses empty
    status: StatusBook
    inventory: Inventory
    expansion: Expansion
    disabled: frozenset[str]  # the Gateways that serve only their 503 (containment)


def translate(resources: Sequence[Resource], *, sealed: bool = True) -> SnapshotIR:
    return translate_with_issues(resources, sealed=sealed).snapshot


def translate_with_issues(
    resources: Sequence[Resource], rejected: Sequence[Rejected] = (), *, sealed: bool = True
) -> Translation:
    """The snapshot of ``resources``, sealed (its version the hash of its content, its
    objects those of the last sealed translation where equal) unless ``sealed`` is False: the
    control plane seals each Gateway's shard instead, and sealing the whole of 50 Gateways
    of 10,000 Routes each was as much work again as translating a change."""
    translation = finish(translate_booked(resources, rejected))
    if sealed:
        snapshot = _LAST[0] = seal(reuse_unchanged(translation.snapshot, _LAST[0]))
        return Translation(snapshot, translation.issues)
    return translation


def translate_booked(
    resources: Sequence[Resource], rejected: Sequence[Rejected] = (),
    routes: Container[str] | None = None,
) -> Booked:
    """Every step but the statuses'. ``routes``: the keys of the only Routes translated (a
    part of the configuration, ``translate/parts.py``); every resource is still looked up
    and reported on as usual (of the Routes Kubernetes objects become, only these are
    validated: the others are outlined, as the loader outlines the part's other Routes)."""
    # Gateway API and Ingress objects, converted; Routes stand in for the invalid ones
    expansion = expand_kubernetes(resources, rejected, routes)
    converted = expansion.converted_routes()  # what Policies of kind HTTPRoute ... target
    plan = plan_containment(expansion.resources, rejected, expansion.replaced, converted)
    inventory = build_inventory(plan.resources)
    status = StatusBook()
    track_resources(inventory, status)
    record_containment(plan, status)
    targets = index_policy_targets(inventory, status, converted)
    disabled = {**plan.disabled, **unattached_gateway_policies(inventory, targets, status)}
    gateways = tuple(
        translate_gateway(g, inventory, targets, status, frozenset(plan.replaced),
                          disabled.get(g.key), routes)
        for g in inventory.gateways
    )
    kept = {g.key for g in inventory.gateways}
    memo.forget_other_gateways(kept)
    shadows.forget_other_gateways(kept)
    consumers = translate_consumers(plan.resources, status)
    snapshot = SnapshotIR(gateways=gateways, statuses=(), consumers=consumers)
    return Booked(snapshot, status, inventory, expansion, frozenset(disabled))


def finish(booked: Booked) -> Translation:
    """The statuses of ``booked`` (unused resources noted) and its located issues."""
    note_unused(booked.inventory, booked.status)
    statuses = gateway_api_statuses(booked.status.build(), booked.expansion)
    snapshot = dataclasses.replace(booked.snapshot, statuses=statuses)
    return Translation(snapshot, located_issues(booked.status.issues(), booked.expansion))


def track_resources(inventory: Inventory, status: StatusBook) -> None:
    for resource in _all(inventory):
        status.track(resource)


def note_unused(inventory: Inventory, status: StatusBook) -> None:
    for resource in _all(inventory):
        reason = _UNUSED.get(resource.kind)
        if reason and not status.gateways_of(resource.kind, resource.key):
            status.note(resource.kind, resource.key, reason)


def _all(inventory: Inventory) -> list[Resource]:
    return [
        *inventory.gateways,
        *inventory.routes,
        *inventory.tables,
        *inventory.upstreams.values(),
        *inventory.policies,
    ]
