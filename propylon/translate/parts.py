"""A configuration translated in parts, one per core, and put together from what each part
reports: for a one-shot check of a large configuration (``propylon validate``), whose
translation was one process's work while the other core waited.

Each part translates every Gateway with only the Routes whose key is in its ``RouteRange``
(``translator.translate_booked(resources, routes=...)``)
(the ranges split the Routes in key order, so each Gateway's rules are the parts' rules one
part after another), and reports, as plain data, what the whole needs of it: its status
book's reports, and for each Gateway its rules' digests (``ir.codec.rule_digests``), their
count, the Upstreams they use and the buckets its shadow report looked at. ``merge`` gives the
statuses, issues and version a translation of the whole would have given, or None when it
cannot be sure of them from the parts, and the caller translates the whole as usual:

- rules of two parts share a bucket, or one is a catch-all (one part's rule may shadow
  another's, which neither part saw);
- one resource was given reasons by two parts (their order in one translation is unknown);
- a Gateway has no report from a part.

Nothing here forks: the caller runs the parts where it likes (the first part's book is the
one ``merge`` completes, so that part runs in the caller's process).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from propylon.config import ConfigError, Resource, Route, RouteTable
from propylon.config.gatewayapi import Expansion
from propylon.config.k8s_status import Condition
from propylon.config.loader import Rejected
from propylon.ir.codec import content_hash, rule_digests
from propylon.translate import shadows
from propylon.translate.gateway import build_upstreams
from propylon.translate.inventory import Inventory
from propylon.translate.select import TableIndex
from propylon.translate.status import BookReports
from propylon.translate.translator import Booked, Translation, finish


@dataclass(frozen=True, slots=True)
class RouteRange:
    """The Routes (or RouteTables) whose key is in [low, high) (None: unbounded)."""

    low: str | None
    high: str | None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self.low is None or key >= self.low) and (
            self.high is None or key < self.high)


@dataclass(frozen=True, slots=True)
class GatewayPart:
    digests: bytes  # rule_digests of the part's rules of this Gateway
    rules: int
    upstreams: frozenset[str]  # the keys of the Upstreams they use
    buckets: frozenset[int]  # hashes of the shadow report's buckets
    catch_all: bool
    whole: bool  # a disabled Gateway: its rules do not depend on the part


# a route object's findings as a part sends them: its conditions by scope and its notes
# (None: it has none; most objects' are alike, and sent once), and its issues
Conditions = tuple[tuple[tuple[str, tuple[tuple[str, Condition], ...]], ...], tuple[str, ...]]
ObjectReport = tuple[Conditions | None, list[ConfigError]]


@dataclass(frozen=True, slots=True)
class RouteObjectsPart:
    """What a part made of the Gateway API route objects, each part converting the rules
    of those of its range (``expand_kubernetes``' ``validated``): the findings of those, by
    (kind, key), and the Upstreams made of Services each object uses, converted or not
    (``Expansion.uses``)."""

    findings: dict[tuple[str, str], ObjectReport]
    uses: dict[tuple[str, str], frozenset[str]]


@dataclass(frozen=True, slots=True)
class Part:
    reports: BookReports
    gateways: dict[str, GatewayPart]
    route_objects: RouteObjectsPart | None = None
    # the Routes and RouteTables of its range that failed validation and that containment
    # left out (no stand-in): another part holds their outlines, which the whole has not
    left_out: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Merged:
    translation: Translation  # its snapshot's Gateways without rules (they stayed in parts)
    version: str
    rules: int


def route_ranges(keys: Iterable[str], shares: Sequence[float]) -> list[RouteRange]:
    """Ranges splitting the Routes of ``keys`` in key order, one per share (of their count;
    the shares add up to 1). Every key, of these Routes or any other, is in one range."""
    keys = sorted(set(keys)) or [""]
    ends = list(itertools.accumulate(shares))[:-1]
    bounds = [keys[min(int(len(keys) * end), len(keys) - 1)] for end in ends]
    lows: list[str | None] = [None, *bounds]
    highs: list[str | None] = [*bounds, None]
    return [RouteRange(low, high) for low, high in zip(lows, highs, strict=True)]


def reach_tables(resources: Sequence[Resource], routes: RouteRange,
                 validated: Callable[[RouteTable], RouteTable | None]) -> bool:
    """Whether every RouteTable the Routes of ``routes`` delegate to, at any depth, could be
    had validated: ``validated`` gives each as validated (a part may hold the others as
    outlines, whose labels select as theirs would), or None if it is not valid."""
    tables = TableIndex([r for r in resources if isinstance(r, RouteTable)])
    owners: list[Route | RouteTable] = [
        r for r in resources if isinstance(r, Route) and r.key in routes]
    reached: set[str] = set()
    while owners:
        owner = owners.pop()
        for rule in owner.spec.rules:
            if rule.delegate is None:
                continue
            for table in tables.select(rule.delegate.selector, owner.namespace):
                if table.key in reached:
                    continue
                reached.add(table.key)
                checked = validated(table)
                if checked is None:
                    return False
                owners.append(checked)
    return True


def describe(booked: Booked, rejected: Iterable[Rejected] = ()) -> Part:
    """What ``merge`` needs of a part: plain data, cheap to send between processes.
    ``rejected``: the resources its load rejected (translated with it)."""
    gateways = {}
    for gateway in booked.snapshot.gateways:
        whole = gateway.key in booked.disabled
        reported = None if whole else shadows.buckets_reported(gateway.key)
        buckets, catch_all = reported if reported is not None else (frozenset(), not whole)
        gateways[gateway.key] = GatewayPart(
            rule_digests(gateway.rules), len(gateway.rules),
            frozenset(u.key for u in gateway.upstreams), buckets, catch_all, whole)
    return Part(booked.status.reports(), gateways, _route_objects(booked.expansion),
                _left_out(booked.inventory, rejected))


def _left_out(inventory: Inventory, rejected: Iterable[Rejected]) -> frozenset[tuple[str, str]]:
    outlined = [(item.kind, item.key) for item in rejected if item.kind in _OUTLINED]
    if not outlined:
        return frozenset()
    held = {(r.kind, r.key) for r in (*inventory.routes, *inventory.tables)}
    return frozenset(ref for ref in outlined if ref not in held)


_OUTLINED = frozenset({"Route", "RouteTable"})  # the kinds a part outlines out of its range


def _route_objects(expansion: Expansion) -> RouteObjectsPart | None:
    if not expansion.runs:
        return None
    findings = expansion.findings
    converted: dict[tuple[str, str], ObjectReport] = {}
    alike: dict[Conditions, Conditions] = {}
    for key, (start, end, here) in expansion.runs.items():
        if here:
            entry = findings.objects.get(key)
            conditions = None if entry is None else (tuple(
                (scope, tuple(by_type.items())) for scope, by_type in entry.scopes.items()),
                tuple(entry.notes))
            converted[key] = (conditions if conditions is None else alike.setdefault(
                conditions, conditions), findings.issues[start:end])
    return RouteObjectsPart(converted, expansion.uses)


def merge(first: Booked, own: Part, others: Sequence[Part]) -> Merged | None:
    """The whole's translation from the first part's ``Booked`` (its book takes the others'
    reports: do not use it afterwards) and every part's description, in range order."""
    if (own.route_objects is not None or any(o.route_objects is not None for o in others)) \
            and not _adopt_route_objects(first.expansion, own, others):
        return None
    status = first.status
    for other in others:
        if not status.absorb(other.reports):
            return None
    digests: dict[str, bytes] = {}
    gateways = []
    rules = 0
    for gateway in first.snapshot.gateways:
        mine = own.gateways.get(gateway.key)
        theirs = [other.gateways.get(gateway.key) for other in others]
        if mine is None or any(part is None for part in theirs):
            return None
        parts = [mine] if mine.whole else [mine, *[p for p in theirs if p is not None]]
        if not mine.whole and _may_shadow_across(parts):
            return None
        digests[gateway.key] = b"".join(part.digests for part in parts)
        rules += sum(part.rules for part in parts)
        used = frozenset().union(*(part.upstreams for part in parts))
        gateways.append(dataclasses.replace(
            gateway, rules=(), upstreams=build_upstreams(used, first.inventory)))
    snapshot = dataclasses.replace(first.snapshot, gateways=tuple(gateways))
    left_out = frozenset().union(*(other.left_out for other in others))
    inventory = _without(first.inventory, left_out) if left_out else first.inventory
    translation = finish(dataclasses.replace(first, snapshot=snapshot, inventory=inventory))
    return Merged(translation, content_hash(translation.snapshot, digests), rules)


def _without(inventory: Inventory, left_out: frozenset[tuple[str, str]]) -> Inventory:
    """``inventory`` without the outlines of what another part's containment left out: the
    whole has no such resource to note as unused."""
    return dataclasses.replace(
        inventory,
        routes=tuple(r for r in inventory.routes if ("Route", r.key) not in left_out),
        tables=tuple(t for t in inventory.tables if ("RouteTable", t.key) not in left_out))


def _adopt_route_objects(expansion: Expansion, own: Part, others: Sequence[Part]) -> bool:
    """Put in ``expansion`` (the first part's) the findings of the route objects another
    part converted the rules of, each where its conversion put them; False when a part did
    not use the same Upstreams of Services for an object as the part converting it (a
    backend read from an outlined object whose conversion stops before it: the parts did
    not make the Upstreams the whole makes), or one is missing."""
    mine = own.route_objects
    parts = [mine, *(other.route_objects for other in others)]
    if mine is None or any(part is None or part.uses != mine.uses for part in parts):
        return False
    theirs: dict[tuple[str, str], ObjectReport] = {}
    for part in parts[1:]:
        if part is not None:
            theirs.update(part.findings)
    findings = expansion.findings
    issues: list[ConfigError] = []
    cursor = 0
    for key, (start, end, here) in sorted(expansion.runs.items(), key=lambda run: run[1][0]):
        if here:
            continue
        found = theirs.get(key)
        if found is None:
            return False
        entry, run = found
        held = findings.objects.get(key)
        if (entry is None) != (held is None):
            return False
        if entry is not None and held is not None:
            scopes, notes = entry
            held.scopes = {scope: dict(by_type) for scope, by_type in scopes}
            held.notes = dict.fromkeys(notes)
        issues += findings.issues[cursor:start]
        issues += run
        cursor = end
    findings.issues[:] = issues + findings.issues[cursor:]
    return True


def _may_shadow_across(parts: Sequence[GatewayPart]) -> bool:
    if any(part.catch_all for part in parts):
        return True
    seen: set[int] = set()
    for part in parts:
        if not seen.isdisjoint(part.buckets):
            return True
        seen |= part.buckets
    return False
