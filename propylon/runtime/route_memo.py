"""Clusters and compiled routes kept from one compilation to the next, for what did not change.

A worker compiles every configuration version whole, but a change of one resource leaves
almost every rule as it was (``ir.reuse_unchanged`` and the delta decoding keep the very
objects of unchanged rules). Rebuilding their routes, and the router over them, was most of
what compiling a one-Route change cost at 10,000 Routes.

- A **cluster** is kept when its Gateway's ``UpstreamIR`` is equal to the one it was compiled
  from and expanding that IR again (with the DNS answers held now) gives the very endpoint
  objects it has, in the same groups: same pools, same health, same load counts. A kept
  cluster is shared by the old runtime and the new one; nothing in it is changed to keep it,
  so a compilation that fails later leaves the old runtime as it was. An Upstream changed
  otherwise (its endpoints, balancing, panic threshold, passive health, circuit breaker,
  failover, DNS names) keeps its cluster too, which takes the new endpoints and settings over
  in place when the compilation is committed (``ClusterMemo.last``).
- A rule's **compiled routes** (one per match) are kept when the rule is the object compiled
  before, in the same Gateway (wherever it is in the Gateway's rules: its labels come from
  its own resource), with the same filter chain object (``ChainMemo``) and the same cluster
  objects for each upstream it names. A ``CompiledRoute`` is not changed after compilation,
  so two runtimes may share it, but for its chain: when its Gateway's chain head changed
  (the Gateway's own policies edited), a rule kept by position keeps its routes, which take
  their new chain as the compilation is committed (``rechain``).

- A Gateway's rules are also kept **by position** (``Placed``: each rule's router entries,
  their chains' head): when the rules of a new version are, at both ends, the very objects at
  the same places as last time, only those between the ends are compiled, the rest carried
  over whole (``carry``), and the last router is changed by the entries of the rules replaced
  (``Router.changed``) instead of being made again over every entry
  (``compile._compile_changed_rules``).

As with ``ChainMemo``, only what the last successful compilation made is kept: the memo holds
one configuration's objects, which its runtime holds anyway (and, carried over by position,
the chains and routes of the rules replaced since the Gateway was last compiled whole: a
quarter of its rules at most).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from propylon.ir import RuleIR, UpstreamIR
from propylon.runtime.check_memo import upstreams_of
from propylon.runtime.memo_journal import Journal

if TYPE_CHECKING:
    from propylon.runtime.chain_memo import ChainHead, ChainMemo
    from propylon.runtime.compiled import Cluster, CompiledRoute, FilterChain
    from propylon.runtime.router import Router, RouterEntry

    _RuleEntries = tuple[RuleIR, tuple[RouterEntry[Any], ...]]  # a rule and its entries


class ClusterMemo:
    def __init__(self) -> None:
        self.kept: dict[tuple[str, str], tuple[UpstreamIR, Cluster]] = {}
        self.made: dict[tuple[str, str], tuple[UpstreamIR, Cluster]] = {}
        # what kept clusters take over (endpoints, settings) when the compilation is committed
        self.moving: list[Callable[[], None]] = []

    def begin(self) -> None:
        self.made = {}
        self.moving = []

    def last(self, gateway: str, upstream: UpstreamIR) -> tuple[UpstreamIR, Cluster] | None:
        """The cluster compiled last in ``gateway`` for an Upstream of ``upstream``'s key,
        with the IR it was compiled from: kept as it is when that IR is equal and its
        endpoints are the very ones (the caller checks), else given ``upstream``'s
        endpoints and settings in place (``move``; with DNS discovery, the IR it expands
        the answers from), so the rules forwarding to it keep what they compiled."""
        return self.kept.get((gateway, upstream.key))

    def add(self, gateway: str, upstream: UpstreamIR, cluster: Cluster) -> None:
        self.made[(gateway, upstream.key)] = (upstream, cluster)

    def move(self, take_over: Callable[[], None]) -> None:
        """``take_over`` gives a kept cluster (``last``) its new endpoints and settings once
        this compilation is committed: the runtime serving until then keeps them as they
        are, and a compilation that fails leaves them so."""
        self.moving.append(take_over)

    def abort(self) -> None:
        self.made = {}
        self.moving = []

    def commit(self) -> None:
        self.kept, self.made = self.made, {}
        for take_over in self.moving:
            take_over()
        self.moving = []


class _Routes:
    """What compiling one rule made (a compiled route per match), and what it was made with."""

    __slots__ = ("chain", "clusters", "routes", "rule")

    def __init__(self, rule: RuleIR, chain: FilterChain, clusters: dict[str, Cluster],
                 routes: tuple[CompiledRoute, ...]) -> None:
        self.rule = rule
        self.chain = chain
        self.clusters = clusters  # its Gateway's, by upstream key
        self.routes = routes


class Placed:
    """One Gateway's rules as last compiled, by position: each rule's router entries (one per
    match), the head of their chains (``ChainHead``: the tracing filter, the Gateway's default
    policies), and how many rules were replaced since the Gateway was last compiled whole
    (their chains and routes may still be kept)."""

    __slots__ = ("entries", "head", "replaced", "rules")

    def __init__(self, rules: tuple[RuleIR, ...], entries: list[tuple[RouterEntry[Any], ...]],
                 head: object, replaced: int) -> None:
        self.rules = rules
        self.entries = entries
        self.head = head
        self.replaced = replaced


def _served_entries(rules: Iterable[_RuleEntries], section: str) -> list[RouterEntry[Any]]:
    """The entries of the ``rules`` served on listener section ``section``."""
    return [entry for rule, entries in rules
            if not rule.sections or section in rule.sections for entry in entries]


class RouteMemo:
    def __init__(self) -> None:
        # each Gateway's rules, by id (each entry keeps its rule, so an id is never another's)
        self.kept: dict[str, dict[int, _Routes]] = {}
        self.made: dict[str, dict[int, _Routes]] = {}
        self._kept: dict[int, _Routes] = {}  # the Gateway being compiled
        self._made: dict[int, _Routes] = {}
        self._clusters: dict[str, Cluster] = {}  # the Gateway being compiled's
        # each Gateway's clusters when they were compiled: while all of them are kept, the
        # rules need not look up theirs one by one
        self.clusters: dict[str, dict[str, Cluster]] = {}
        self.made_clusters: dict[str, dict[str, Cluster]] = {}
        self.same_clusters = False
        # each Gateway's router: the next one reuses its buckets of unchanged entries
        self.routers: dict[str, Router[CompiledRoute]] = {}
        self.made_routers: dict[str, Router[CompiledRoute]] = {}
        # each Gateway's rules by position: the next compilation starts from them
        self.placed: dict[str, Placed] = {}
        self.made_placed: dict[str, Placed] = {}
        # the router of each listener section's rules (Gateway, listener, section), and what
        # this compilation changed of a Gateway's rules when it changed its router in place:
        # the sections' routers are changed in place alike (``compile.listener_runtimes``)
        self.sections: dict[tuple[str, str, str], Router[CompiledRoute]] = {}
        self.made_sections: dict[tuple[str, str, str], Router[CompiledRoute]] = {}
        self.changes: dict[str, tuple[list[_RuleEntries], list[_RuleEntries]]] = {}
        # a Gateway's dictionary of ``kept`` taken over by ``carry``: what this compilation
        # set or removed in it (undone if it fails, ``abort``), and the entries it removed,
        # still found by ``_compiled_with``
        self._journal = Journal()
        self._carried: dict[int, _Routes] = {}
        self._gateway = ""
        # kept rules' compiled routes and the chains they take when this compilation is
        # committed (``rechain``)
        self._rechained: list[tuple[tuple[CompiledRoute, ...], FilterChain, _Routes | None]] = []

    def begin(self) -> None:
        self.abort()
        self.made, self.made_clusters, self.made_routers = {}, {}, {}
        self.made_placed, self.made_sections, self.changes = {}, {}, {}

    def gateway(self, gateway: str, clusters: dict[str, Cluster]) -> None:
        """The rules of ``gateway`` come next, with these clusters."""
        old = self.clusters.get(gateway)
        self.same_clusters = old is not None and old.keys() == clusters.keys() and all(
            old[key] is cluster for key, cluster in clusters.items())
        self.made_clusters[gateway] = clusters
        self._clusters = clusters
        self._kept = self.kept.get(gateway, {})
        self._made = self.made.setdefault(gateway, {})
        self._gateway, self._carried = gateway, {}

    def get(self, rule: RuleIR, chain: FilterChain, clusters: dict[str, Cluster]
            ) -> tuple[CompiledRoute, ...] | None:
        """What compiling this very ``rule`` (wherever it is now in its Gateway's rules) with
        this chain and clusters made before, if anything; kept for the next time."""
        entry = self._compiled_with(rule, clusters)
        if entry is None or entry.chain is not chain:
            return None
        return self._keep(entry, clusters)

    def unchanged(self, rule: RuleIR, head: ChainHead, chains: ChainMemo
                  ) -> tuple[CompiledRoute, ...] | None:
        """``get`` without the chain in hand: what this very ``rule`` made before, if its
        chain (after ``head``: the Gateway's tracing and default policies) is still the one
        ``chains`` holds for it (then kept there too) and its clusters are the same
        objects."""
        clusters = self._clusters
        entry = self._compiled_with(rule, clusters)
        if entry is None or not chains.keep(rule, head, entry.chain):
            return None
        return self._keep(entry, clusters)

    def _compiled_with(self, rule: RuleIR, clusters: dict[str, Cluster]) -> _Routes | None:
        """The last compilation of this very ``rule``, if its upstreams' clusters are the
        same objects in ``clusters``."""
        entry = self._kept.get(id(rule)) or self._carried.get(id(rule))
        if entry is None or entry.rule is not rule:
            return None
        if not self.same_clusters and any(
                entry.clusters.get(upstream) is not clusters.get(upstream)
                for upstream in upstreams_of(rule)):
            return None
        return entry

    def _keep(self, entry: _Routes, clusters: dict[str, Cluster]) -> tuple[CompiledRoute, ...]:
        entry.clusters = clusters
        self._journal.put(self._made, id(entry.rule), entry, self._kept)
        return entry.routes

    def add(self, rule: RuleIR, chain: FilterChain, clusters: dict[str, Cluster],
            routes: tuple[CompiledRoute, ...]) -> None:
        self._journal.put(self._made, id(rule), _Routes(rule, chain, clusters, routes),
                          self._kept)

    def placed_now(self, gateway: str) -> Placed | None:
        """The Gateway's rules as this compilation placed them (None for a check's)."""
        return self.made_placed.get(gateway)

    def last_placed(self, gateway: str) -> Placed | None:
        """The Gateway's rules as last compiled, if that router is the one kept."""
        return self.placed.get(gateway) if gateway in self.routers else None

    def carry(self, rules: Iterable[RuleIR]) -> None:
        """Keep what the Gateway's last compilation made for every rule but ``rules``, as if
        each had been asked for: the rules around a change, the very objects compiled before
        with the same clusters (``same_clusters``). The last compilation's dictionary is
        taken over, not copied (``memo_journal.py``)."""
        taken, journal = self._kept, self._journal
        for key, entry in self._made.items():
            journal.set(taken, key, entry)
        for rule in rules:
            entry = journal.pop(taken, id(rule))
            if entry is not None:
                self._carried[id(rule)] = entry
        self._made = self.made[self._gateway] = taken

    def rechain(self, rule: RuleIR, routes: tuple[CompiledRoute, ...], chain: FilterChain
                ) -> None:
        """``rule``, kept by position (``carry``) after its Gateway's chain head changed,
        keeps its compiled ``routes`` and router entries: they take ``chain`` when this
        compilation is committed (a request keeps the chain its route had when it was routed,
        ``Session.chain``), so a Gateway's policies edited cost a chain per rule, not its
        routes and router made again."""
        entry = self._made.get(id(rule))
        if entry is None or entry.rule is not rule or entry.routes != routes:
            entry = None
        self._rechained.append((routes, chain, entry))

    def router(self, gateway: str, entries: Iterable[RouterEntry[CompiledRoute]],
               placed: Placed | None = None) -> Router[CompiledRoute]:
        from propylon.runtime.router import Router

        router = Router(entries, self.routers.get(gateway))
        self.place(gateway, router, placed)
        return router

    def changed_router(self, gateway: str, gone: list[_RuleEntries], new: list[_RuleEntries],
                       placed: Placed) -> Router[CompiledRoute]:
        """The Gateway's last router without the entries of the rules ``gone`` and with those
        of ``new``."""
        router = self.routers[gateway].changed([e for _, es in gone for e in es],
                                               [e for _, es in new for e in es])
        self.place(gateway, router, placed)
        self.changes[gateway] = (gone, new)
        return router

    def section_router(self, key: tuple[str, str, str],
                       rules: Iterable[_RuleEntries]) -> Router[CompiledRoute]:
        """The router of the entries of ``rules`` served on section ``key`` (Gateway,
        listener, section): the last one changed in place as the Gateway's was, when it was
        and that router is kept; otherwise built, with the last one's buckets."""
        from propylon.runtime.router import Router

        gateway, _, section = key
        last = self.sections.get(key)
        change = self.changes.get(gateway)
        if last is not None and change is not None:
            gone, new = change
            router = last.changed(_served_entries(gone, section), _served_entries(new, section))
        else:
            router = Router(_served_entries(rules, section), last)
        self.made_sections[key] = router
        return router

    def place(self, gateway: str, router: Router[CompiledRoute], placed: Placed | None) -> None:
        self.made_routers[gateway] = router
        if placed is not None:
            self.made_placed[gateway] = placed

    def abort(self) -> None:
        """The compilation failed: what it changed in ``kept`` is undone."""
        self._journal.undo()
        self._rechained = []

    def commit(self) -> None:
        self._journal.forget()
        for routes, chain, entry in self._rechained:
            for route in routes:
                route.chain = chain
            if entry is not None:
                entry.chain = chain
        self._rechained = []
        self.kept, self.made = self.made, {}
        self._kept, self._made = {}, {}
        self._carried = {}
        self.clusters, self.made_clusters = self.made_clusters, {}
        self.routers, self.made_routers = self.made_routers, {}
        self.placed, self.made_placed = self.made_placed, {}
        self.sections, self.made_sections, self.changes = self.made_sections, {}, {}
