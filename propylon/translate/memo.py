"""The rules of unchanged Routes, kept from one translation of a Gateway to the next.

A reload of a large configuration usually changes a few Routes; translating every other one
again (drafts, matches, backends, policy levels and attachment) was most of a reload's time
at 10,000 Routes. ``RouteMemo`` keeps, per Gateway, what the last translation made of each
Route: its drafts, its served rules, and what it reported to the status book on the way
(``StatusTape``), replayed so statuses and issues are exactly those a full translation
gives, in the same order.

A Route's entry is used again only when nothing it was made from changed: the same Route
object (the loader gives unchanged files' resources as the same objects), the same policies
(objects) targeting it, its named rules, or the RouteTables its delegations selected (the
same objects, recursively), and, for the whole memo, the same Gateway as rules read it
(``gateway_view``: its key, route selector, invalid-route response, whether it has listener
sections, and which types its enforced Gateway-level policies take, from which sources,
compared by value: a listener, certificate, trusted proxy or tracing change, or an edit of
its policies' settings, which rules do not carry (``replace.py``), keeps every Route), the
same RouteTables as selectors read them (their keys and labels, in order: which tables a
selector finds), the same Upstreams as rules read them (their keys and the namespaces they
admit: an Upstream's endpoints, balancing or health checks change no rule), the same
contained resources and no secret read for the Gateway's own policies. So one RouteTable,
or one Policy targeting a Route, edited among 10,000 translates the Routes that it reaches.
Anything else, and every Route whose translation read a secret (its value may have changed
with the same configuration), is translated as before.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from propylon.config import ConfigError, Gateway, Resource, Route, RouteTable
from propylon.ir import RuleIR
from propylon.ir.frozen import quicker_init
from propylon.translate.context import GatewayContext
from propylon.translate.delegation import Draft
from propylon.translate.inventory import Inventory
from propylon.translate.policies import PolicyTargets
from propylon.translate.status import StatusBook

_Call = tuple[str, tuple[Any, ...], dict[str, Any]]


class StatusTape(StatusBook):
    """Passes every report on to ``book`` and records it, to be replayed on a later book."""

    def __init__(self, book: StatusBook) -> None:  # no entries of its own
        self.book = book
        self.calls: list[_Call] = []
        self.read_back = False  # asked what others reported: not replayable

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        getattr(self.book, name)(*args, **kwargs)

    def track(self, resource: Resource) -> None:
        self._record("track", resource)

    def fail(self, kind: str, key: str, reason: str, *, field: str | None = None) -> None:
        self._record("fail", kind, key, reason, field=field)

    def reject(self, kind: str, key: str, errors: Sequence[ConfigError],
               reasons: Sequence[str]) -> None:
        self._record("reject", kind, key, errors, reasons)

    def warn(self, kind: str, key: str, reason: str, *, field: str | None = None) -> None:
        self._record("warn", kind, key, reason, field=field)

    def note(self, kind: str, key: str, reason: str) -> None:
        self._record("note", kind, key, reason)

    def selected(self, kind: str, key: str, gateway: str) -> None:
        self._record("selected", kind, key, gateway)

    def gateways_of(self, kind: str, key: str) -> set[str]:
        self.read_back = True
        return self.book.gateways_of(kind, key)

    def build(self) -> Any:
        raise TypeError("a StatusTape only records")

    def issues(self) -> tuple[ConfigError, ...]:
        raise TypeError("a StatusTape only records")


@quicker_init  # tens of thousands per translation of a large configuration
@dataclass(frozen=True, slots=True)
class Recording:
    """What one step of a Route's translation reported, and made Invalid for the Gateway."""

    calls: tuple[_Call, ...]
    invalid: frozenset[str]
    # the arguments of ``calls`` when it is one ``selected`` and nothing else (most Routes'
    # first step: replayed for every kept Route of every Gateway at each change)
    selected: tuple[str, str, str] | None = None

    def replay(self, ctx: GatewayContext) -> None:
        if self.selected is not None:
            ctx.status.selected(*self.selected)
            return
        for name, args, kwargs in self.calls:
            getattr(ctx.status, name)(*args, **kwargs)
        if self.invalid:
            ctx.invalid |= self.invalid


class StepRecorder:
    """Run a step with ``ctx.status`` taped; ``with`` gives a one-item list holding the
    step's ``Recording`` afterwards, or None when it cannot be replayed (it read a secret, or
    asked the book what other steps reported). A class, not a ``contextmanager``: two per
    Route translated, and the generator's machinery was a thirtieth of a second at 10,000."""

    __slots__ = ("_before", "_book", "_ctx", "_out", "_reads", "_secret_reads", "_tape")

    def __init__(self, ctx: GatewayContext, secret_reads: Any) -> None:
        self._ctx, self._secret_reads = ctx, secret_reads

    def __enter__(self) -> list[Recording | None]:
        ctx = self._ctx
        self._tape, self._book, self._before = StatusTape(ctx.status), ctx.status, set(
            ctx.invalid)
        self._reads = self._secret_reads()
        self._out: list[Recording | None] = [None]
        ctx.status = self._tape
        return self._out

    def __exit__(self, raised: object, error: object, trace: object) -> None:
        ctx, tape = self._ctx, self._tape
        ctx.status = self._book
        if raised is not None or tape.read_back or self._secret_reads() != self._reads:
            return
        calls, invalid = tuple(tape.calls), frozenset(ctx.invalid - self._before)
        selected = None
        if len(calls) == 1 and not invalid and calls[0][0] == "selected" and not calls[0][2]:
            kind, key, gateway = calls[0][1]
            selected = (kind, key, gateway)
        self._out[0] = Recording(calls, invalid, selected)


@quicker_init  # tens of thousands per translation of a large configuration
@dataclass(frozen=True, slots=True)
class RouteEntry:
    route: Route
    flattened: Recording
    drafts: tuple[Draft, ...]
    built: Recording
    rules: tuple[tuple[Draft, RuleIR], ...]
    tables: tuple[RouteTable, ...]  # the RouteTables its delegations selected, recursively


class RouteMemo:
    """One Gateway's entries; ``start`` gives the usable ones, ``keep`` the next ones."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held by the translation using it
        self._gateway: tuple[object, ...] = ()  # ``gateway_view``
        self._view: tuple[object, ...] = ()  # ``InventoryRead.view``
        self._tables: dict[str, RouteTable] = {}  # the translation's, by key
        self._replaced: frozenset[str] = frozenset()
        self._entries: dict[str, RouteEntry] = {}
        self._next: dict[str, RouteEntry] = {}
        # what the translation that made ``_entries`` had; those of this one, kept by finish
        self._targets: PolicyTargets = {}
        self._started: tuple[tuple[object, ...], tuple[object, ...], frozenset[str],
                             PolicyTargets] = ((), (), frozenset(), {})
        # (kind, key) of each Route or RouteTable whose targeting policies changed since
        self._retargeted: frozenset[tuple[str, str]] = frozenset()

    def start(self, gateway: tuple[object, ...], inventory: Inventory,
              replaced: frozenset[str], targets: PolicyTargets) -> None:
        """``gateway``: ``gateway_view`` of the Gateway translated."""
        read = inventory_read(inventory)
        self._tables = read.tables
        if gateway != self._gateway or read.view != self._view or replaced != self._replaced:
            self._entries = {}
        self._retargeted = retargeted(targets, self._targets) if self._entries else frozenset()
        self._next = {}
        self._started = (gateway, read.view, replaced, targets)

    def forget(self) -> None:
        """Nothing of this translation is kept, nor used again (see the module doc)."""
        self._gateway, self._view, self._entries, self._next, self._targets = (
            (), (), {}, {}, {})

    def get(self, route: Route) -> RouteEntry | None:
        entry = self._entries.get(route.key)
        if entry is None or entry.route is not route:
            return None
        retargeted = self._retargeted
        if retargeted and ((route.kind, route.key) in retargeted or any(
                (t.kind, t.key) in retargeted for t in entry.tables)):
            return None
        tables = self._tables
        if entry.tables and any(tables.get(t.key) is not t for t in entry.tables):
            return None
        self._next[route.key] = entry
        return entry

    def keep(self, entry: RouteEntry) -> None:
        self._next[entry.route.key] = entry

    def finish(self) -> None:
        self._entries, self._next = self._next, {}
        self._gateway, self._view, self._replaced, self._targets = self._started


def gateway_view(gateway: Gateway, policies: Sequence[object]) -> tuple[object, ...]:
    """What the rules' translation reads of ``gateway``, to compare by value: its key, which
    namespaces it admits (``select.gateway_admits``), its invalid-route response, whether
    its routes may be served on some listener sections only (which sections, a Route says
    itself: ``Route.served_on``), and ``policies``, what rules read of the enforced
    candidates of its level (``policies.gateway_level``: its own items and the Policies
    targeting it): their types and sources."""
    spec = gateway.spec
    return (gateway.key, spec.route_selector, spec.invalid_route_response,
            gateway.sections is not None, tuple(policies))


def retargeted(targets: PolicyTargets, last: PolicyTargets) -> frozenset[tuple[str, str]]:
    """(kind, key) of every target whose policies (objects, in order) differ between
    ``last`` and ``targets``, named rules included."""
    if targets is last:
        return frozenset()
    return frozenset(key[:2] for key in targets.keys() | last.keys()
                     if not _same(tuple(targets.get(key, ())), tuple(last.get(key, ()))))


@dataclass(frozen=True, slots=True)
class InventoryRead:
    """What the rules' translation reads of an inventory's Upstreams and RouteTables, made
    once per inventory (every Gateway's memo compares it): ``view``, which Upstreams exist
    and the namespaces each admits (``backends.reference_error``), then which RouteTables
    exist, in order, and their labels (``select.selector_matches``); ``tables`` by key."""

    inventory: Inventory
    view: tuple[object, ...]
    tables: dict[str, RouteTable]


_LAST_READ: list[InventoryRead | None] = [None]


def inventory_read(inventory: Inventory) -> InventoryRead:
    last = _LAST_READ[0]
    if last is not None and last.inventory is inventory:
        return last
    view = (*((key, upstream.spec.allowed_namespaces)
              for key, upstream in inventory.upstreams.items()), None,
            *((table.key, table.metadata.labels) for table in inventory.tables))
    read = _LAST_READ[0] = InventoryRead(
        inventory, view, {table.key: table for table in inventory.tables})
    return read


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


_MEMOS: dict[str, RouteMemo] = {}


@contextmanager
def route_memo(gateway_key: str) -> Iterator[RouteMemo | None]:
    """The memo of ``gateway_key``'s translations, or None while another thread uses it."""
    memo = _MEMOS.setdefault(gateway_key, RouteMemo())
    if not memo.lock.acquire(blocking=False):
        yield None
        return
    try:
        yield memo
    finally:
        memo.lock.release()


def forget_other_gateways(keys: set[str]) -> None:
    """Drop the memos of Gateways a translation no longer has (they hold their rules)."""
    for key in set(_MEMOS) - keys:
        _MEMOS.pop(key, None)
