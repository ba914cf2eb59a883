"""Request routing: compiled once from ``RouterEntry`` values, then ``match`` only reads.

Precedence (the documented contract; tests/unit/test_router.py pins every rule):

1. Host tables, tried in this order, falling back to the next when a table has no matching rule
   (Kong-like fallback: a request for ``a.example.com`` that matches no rule of the exact host
   ``a.example.com`` is still routed by ``*.example.com`` rules, then by any-host rules):
   a. the exact host table (``a.example.com``);
   b. wildcard tables from the longest suffix to the shortest: ``*.example.com`` matches
      ``a.example.com`` and ``a.b.example.com`` but not ``example.com``;
   c. the any-host table (entries with ``hostnames == ()``; the hostname ``*`` means the same).
2. Within a table: ``exact > regex > prefix``. An exact path beats every regex, any regex beats
   every prefix (so a catch-all ``prefix: /`` never hides a regex rule, istio#60695), and a
   longer prefix beats a shorter one. Regexes are tried in config order (of their first entry).
   This is the order of Envoy Gateway (PR 2579), Contour and NGINX Gateway Fabric; the Gateway
   API fixes only ``exact > prefix`` and leaves regexes to the implementation.
3. For the same path match (same kind and value) more conditions win: the method, each header
   condition and each query condition count one. Remaining ties go to the lower ``order``.
4. A candidate whose conditions fail does not stop the search: the next candidate of the same
   path, then the regexes, then the prefixes longest first, then the next host table are tried.

Path semantics: ``exact`` is string equality; ``prefix`` is segment-wise like the Gateway API
(``/v2`` matches ``/v2``, ``/v2/`` and ``/v2/x`` but not ``/v2x``; ``/`` matches everything; a
trailing slash in the configured prefix is ignored); ``regex`` is ``re.fullmatch`` on the path.
Header and query conditions compare exactly or full-match a regex; a condition with neither
value nor regex only requires presence. The method is compared exactly, upper-case.

Cost invariants: the host selects a precomputed chain of tables with one dict probe (hosts
known only through wildcards are resolved once, then memoised up to a bound). In a table,
``match`` does one dict probe for the exact path and one per path depth for prefixes (only
depths up to the longest configured prefix). Buckets are pre-sorted and a candidate without
conditions ends its bucket, so an unconditioned route costs no call beyond the probe. Only
regex routes are scanned linearly (per host table, before the prefixes); a table without
regexes pays nothing for them.
Invalid input (unknown path kind, bad regex) raises at construction: translation is expected
to have replaced invalid routes already (see propylon/ir/model.py).

Listener sections (``sectioned``): one router over the routers of a listener's sections (the
Gateway API listeners sharing its port). A host belongs to the section whose hostname fits it
best (the same name, then the longest ``*.suffix``, then the section without hostname) and
gets that section's chain of tables only, never another section's (listener isolation): a
host the router has no chain for yet is resolved once, then memoised, as wildcard hosts are,
so ``match`` costs what it costs without sections.

``shadowed`` answers, from the same rules, which entries can never be returned (a rule another
rule fully shadows); ``propylon validate`` warns about them (translate/shadows.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, NamedTuple, Protocol, TypeVar

from propylon.ir.model import MatchIR, PathMatchIR, ValueMatchIR

T = TypeVar("T")

_MEMO_LIMIT = 4096  # wildcard-resolved hosts remembered per router
_PATH_KINDS = ("exact", "prefix", "regex")

# (name, exact value or None, compiled fullmatch or None); neither set means "present".
_ValueTest = tuple[str, str | None, Callable[[str], object] | None]


class RequestView(Protocol):
    """What conditions read from a request; names passed to ``header`` are lower-case."""

    def header(self, name: str) -> str | None: ...

    def query_param(self, name: str) -> str | None: ...


class RouterEntry(NamedTuple, Generic[T]):
    """One match of a rule (a tuple: a configuration of 10,000 routes makes 40,000 of them
    per compilation, and a frozen dataclass cost twice as much to make)."""

    hostnames: tuple[str, ...]  # exact ("a.example.com") or wildcard ("*.example.com"); () = any
    match: MatchIR
    payload: T
    order: int  # config order, the final tie-breaker (lower wins)


# --- compiled candidates ------------------------------------------------------------------------


class _Candidate(Generic[T]):
    """One entry with its conditions compiled; only buckets' conditioned candidates check them."""

    __slots__ = ("has_values", "headers", "match", "method", "payload", "query")

    def __init__(self, entry: RouterEntry[T]) -> None:
        m = entry.match
        self.payload = entry.payload
        self.match = m  # what it was made from (``_same``)
        self.method = m.method.upper() if m.method else None
        self.headers = tuple(map(_compile_value, m.headers)) if m.headers else ()
        self.query = tuple(map(_compile_value, m.query)) if m.query else ()
        self.has_values = bool(self.headers or self.query)

    def values_ok(self, request: RequestView) -> bool:
        if self.headers and not _values_ok(request.header, self.headers):
            return False
        return not self.query or _values_ok(request.query_param, self.query)


def _compile_value(v: ValueMatchIR) -> _ValueTest:
    if v.value is not None and v.regex is not None:
        raise ValueError(f"condition on {v.name!r} sets both value and regex")
    return (v.name, v.value, re.compile(v.regex).fullmatch if v.regex is not None else None)


def _values_ok(get: Callable[[str], str | None], tests: tuple[_ValueTest, ...]) -> bool:
    for name, exact, fullmatch in tests:
        got = get(name)
        if got is None:
            return False
        if fullmatch is not None:
            if fullmatch(got) is None:
                return False
        elif exact is not None and got != exact:
            return False
    return True


class _Bucket(Generic[T]):
    """Candidates for one path match: conditioned ones by precedence, then the default.

    Invariant: at least one of ``conditioned`` and ``default`` is non-empty. Candidates ranked
    after the first unconditioned one can never win, so they are dropped at construction.
    ``sources``: the entries it was made from, in config order (a router built from entries of
    the same payloads and matches, in the same order, reuses it; ``Router.changed`` makes a
    bucket again from them, less the entries gone and with the new ones).
    """

    __slots__ = ("conditioned", "default", "sources")

    def __init__(self, sources: list[RouterEntry[T]], like: _Bucket[T] | None = None) -> None:
        """``like``: a bucket made from entries of the same payloads and matches, in the same
        order, whose candidates this one shares (its entries' orders are these sources')."""
        self.sources: tuple[RouterEntry[T], ...] = tuple(sources)
        self.conditioned: tuple[_Candidate[T], ...]
        self.default: _Candidate[T] | None
        if like is not None:
            self.conditioned, self.default = like.conditioned, like.default
            return
        if len(sources) == 1:  # most paths have one rule (a large configuration's build time)
            only = sources[0]
            candidate = _Candidate(only)
            conditioned = _conditions(only.match)
            self.conditioned = (candidate,) if conditioned else ()
            self.default = None if conditioned else candidate
            return
        ranked = [(_conditions(e.match), e.order, _Candidate(e)) for e in sources]
        ranked.sort(key=lambda r: (-r[0], r[1]))
        self.conditioned = tuple(c for n, _, c in ranked if n)
        self.default = next((c for n, _, c in ranked if not n), None)

    def select(self, method: str, request: RequestView) -> _Candidate[T] | None:
        for c in self.conditioned:
            # The method test is inlined: method-only conditions are common and need no call.
            if (c.method is None or c.method == method) and (
                not c.has_values or c.values_ok(request)
            ):
                return c
        return self.default


# --- one host table -----------------------------------------------------------------------------


class _HostTable(Generic[T]):
    """The rules of one host key: exact paths, prefixes by normalised value, regexes in order."""

    __slots__ = ("exact", "max_prefix", "prefixes", "regexes")

    def __init__(self, entries: list[RouterEntry[T]], previous: _HostTable[T] | None) -> None:
        exact: dict[str, list[RouterEntry[T]]] = {}
        prefixes: dict[str, list[RouterEntry[T]]] = {}
        regexes: dict[str, list[RouterEntry[T]]] = {}
        kinds = {"exact": exact, "prefix": prefixes, "regex": regexes}  # as in _PATH_KINDS
        for e in entries:
            path = e.match.path
            table = kinds.get(path.kind)
            if table is None:
                raise ValueError(f"unknown path match kind {path.kind!r}")
            key = _path_key(path)
            found = table.get(key)
            if found is None:
                table[key] = [e]
            else:
                found.append(e)
        if previous is None:
            self.exact = {k: _Bucket(v) for k, v in exact.items()}
            self.prefixes = {k: _Bucket(v) for k, v in prefixes.items()}
        else:
            self.exact = _buckets(exact, previous.exact)
            self.prefixes = _buckets(prefixes, previous.prefixes)
        self.max_prefix = max(map(len, self.prefixes), default=0)
        self.regexes = _compile_regexes(regexes)

    def find(self, method: str, path: str, request: RequestView) -> _Candidate[T] | None:
        bucket = self.exact.get(path)
        if bucket is not None:
            cand = bucket.select(method, request) if bucket.conditioned else bucket.default
            if cand is not None:
                return cand
        if self.regexes:
            cand = self._find_regex(method, path, request)
            if cand is not None:
                return cand
        if self.prefixes:
            # Probe every segment boundary of the path, longest first, skipping boundaries
            # beyond the longest prefix; the root prefix is stored under "" and probed last.
            # rpartition is one C call per depth, cheaper than rfind plus a slice.
            prefixes = self.prefixes
            if len(path) > self.max_prefix:
                key = path[: self.max_prefix + 1].rpartition("/")[0]
            elif path.endswith("/"):
                key = path[:-1]  # configured prefixes never end in "/"
            else:
                key = path
            while True:
                bucket = prefixes.get(key)
                if bucket is not None:
                    cand = bucket.select(method, request) if bucket.conditioned else bucket.default
                    if cand is not None:
                        return cand
                if not key:
                    break
                key = key.rpartition("/")[0]
        return None

    def _find_regex(self, method: str, path: str, request: RequestView) -> _Candidate[T] | None:
        for fullmatch, bucket in self.regexes:
            if fullmatch(path) is not None:
                cand = bucket.select(method, request)
                if cand is not None:
                    return cand
        return None


def _changed_table(old: _HostTable[T] | None, gone: list[RouterEntry[T]],
                   new: list[RouterEntry[T]]) -> _HostTable[T] | None:
    """``old`` without the entries ``gone`` (of payloads it was made from) and with ``new``: the
    buckets of the other paths are ``old``'s; None when no entry is left."""
    if old is None:
        return _HostTable(new, None) if new else None
    changes: dict[tuple[str, str], tuple[list[RouterEntry[T]], list[RouterEntry[T]]]] = {}
    for index, entries in enumerate((gone, new)):
        for e in entries:
            path = e.match.path
            if path.kind not in _PATH_KINDS:
                raise ValueError(f"unknown path match kind {path.kind!r}")
            where = (path.kind, _path_key(path))
            change = changes.get(where)
            if change is None:
                change = changes[where] = ([], [])
            change[index].append(e)
    table: _HostTable[T] = _HostTable([], None)
    table.exact, table.prefixes, table.regexes = old.exact, old.prefixes, old.regexes
    table.max_prefix = old.max_prefix
    regexes_changed = False
    for (kind, key), (out, into) in changes.items():
        if kind == "regex":
            regexes_changed = True
            continue
        if kind == "exact":
            if table.exact is old.exact:
                table.exact = old.exact.copy()
            buckets = table.exact
        else:
            if table.prefixes is old.prefixes:
                table.prefixes = old.prefixes.copy()
            buckets = table.prefixes
        bucket = buckets.get(key)
        sources = _less(bucket.sources, out) if bucket is not None else []
        if into:
            sources = sorted([*sources, *into], key=_order)
        if sources:
            buckets[key] = _Bucket(sources)
        elif bucket is not None:
            del buckets[key]
    if table.prefixes is not old.prefixes:
        table.max_prefix = _longest(table.prefixes, old.max_prefix,
                                    [key for kind, key in changes if kind == "prefix"])
    if regexes_changed:
        groups: dict[str, list[RouterEntry[T]]] = {}
        for _, bucket in old.regexes:
            for e in bucket.sources:
                groups.setdefault(e.match.path.value, []).append(e)
        gone_regexes = [e for e in gone if e.match.path.kind == "regex"]
        for pattern in list(groups):
            groups[pattern] = _less(groups[pattern], gone_regexes)
        for e in new:
            if e.match.path.kind == "regex":
                groups.setdefault(e.match.path.value, []).append(e)
        table.regexes = _compile_regexes(
            {p: sorted(es, key=_order) for p, es in groups.items() if es})
    if not (table.exact or table.prefixes or table.regexes):
        return None
    return table


def _longest(prefixes: dict[str, _Bucket[T]], before: int, changed: list[str]) -> int:
    """The longest key of ``prefixes``, which were ``before`` at most until the keys
    ``changed`` were added or removed: only a longest one removed makes it look at them all."""
    if any(len(key) == before and key not in prefixes for key in changed):
        return max(map(len, prefixes), default=0)
    return max(before, max((len(key) for key in changed if key in prefixes), default=0))


def _less(entries: Iterable[RouterEntry[T]], gone: list[RouterEntry[T]]) -> list[RouterEntry[T]]:
    """``entries`` without those of the payloads of ``gone`` (the very objects: a router's
    entries are told apart by their payloads; a bucket kept from an earlier router may hold
    an equal entry made then, of the same payload)."""
    if not gone:
        return list(entries)
    ids = {id(e.payload) for e in gone}
    return [e for e in entries if id(e.payload) not in ids]


def _order(entry: RouterEntry[T]) -> int:
    return entry.order


def _buckets(grouped: dict[str, list[RouterEntry[T]]], previous: dict[str, _Bucket[T]]
             ) -> dict[str, _Bucket[T]]:
    """A bucket per path, the previous router's where it was made from the same entries."""
    buckets = {}
    for key, sources in grouped.items():
        old = previous.get(key)
        if old is None or not _same(old, sources):
            old = _Bucket(sources)
        elif not all(a.order == b.order for a, b in zip(old.sources, sources, strict=True)):
            old = _Bucket(sources, old)  # its orders are the new ones (``Router.changed``)
        buckets[key] = old
    return buckets


def _same(bucket: _Bucket[T], new: list[RouterEntry[T]]) -> bool:
    """Whether ``bucket`` ranks its candidates as ``new`` would: made from the same payloads
    and matches (objects) in the same order. Orders themselves may differ (entries inserted
    before them): a bucket ranks its entries by their order among themselves only."""
    old = bucket.sources
    return len(old) == len(new) and all(a.payload is b.payload and a.match is b.match
                                        for a, b in zip(old, new, strict=True))


def _host_keys(entry: RouterEntry[T]) -> Iterable[str]:
    """The host tables an entry is in: lower-case hosts, ``*.suffix``, or ``*`` for any host."""
    return dict.fromkeys(h.lower() for h in entry.hostnames) or ("*",)


def _path_key(path: PathMatchIR) -> str:
    """An entry's bucket within its kind: configured prefixes lose their trailing slash."""
    return path.value.rstrip("/") if path.kind == "prefix" else path.value


def _conditions(match: MatchIR) -> int:
    """How specific a match is within its bucket: the method and each header or query test."""
    return (match.method is not None) + len(match.headers) + len(match.query)


def _compile_regexes(
    groups: dict[str, list[RouterEntry[T]]],
) -> tuple[tuple[Callable[[str], object], _Bucket[T]], ...]:
    # Each distinct pattern is compiled and tested once; patterns run in the order of their
    # lowest-ordered entry, and ``_Bucket`` ranks the entries that share a pattern.
    ordered = sorted(groups.items(), key=lambda kv: min(e.order for e in kv[1]))
    return tuple((re.compile(p).fullmatch, _Bucket(rs)) for p, rs in ordered)


# --- the router ---------------------------------------------------------------------------------


class Router(Generic[T]):
    """Host tables built once; ``match`` returns the winning payload or None.

    A request's host selects a chain of tables (exact, wildcards longest first, any-host),
    tried in order. Chains of configured exact hosts are built at construction. Other hosts
    get theirs from the wildcard suffixes on first sight; up to ``_MEMO_LIMIT`` of those are
    memoised (derived from this immutable router only, so never stale), the rest recomputed.
    """

    __slots__ = ("_default", "_exact", "_memo", "_sections", "_wildcards")

    def __init__(self, entries: Iterable[RouterEntry[T]], previous: Router[T] | None = None
                 ) -> None:
        """``previous``: a router whose buckets made from the same entry objects (in the same
        order) are reused (a new configuration version where most rules are unchanged)."""
        exact: dict[str, list[RouterEntry[T]]] = {}
        wild: dict[str, list[RouterEntry[T]]] = {}
        any_host: list[RouterEntry[T]] = []
        for e in entries:
            if not e.hostnames:
                any_host.append(e)
                continue
            for host in _host_keys(e):
                if host == "*":
                    any_host.append(e)
                elif host.startswith("*."):
                    wild.setdefault(host[1:], []).append(e)  # keyed ".example.com"
                else:
                    exact.setdefault(host, []).append(e)
        old_wild: dict[str, _HostTable[T]] = previous._wildcards if previous is not None else {}
        old_exact: dict[str, tuple[_HostTable[T], ...]] = (
            previous._exact if previous is not None else {})
        old_default = previous._default[-1] if previous is not None and previous._default else None
        self._wildcards: dict[str, _HostTable[T]] = {
            s: _HostTable(es, old_wild.get(s)) for s, es in wild.items()}
        self._default: tuple[_HostTable[T], ...] = (
            (_HostTable(any_host, old_default),) if any_host else ())
        self._memo: dict[str, tuple[_HostTable[T], ...]] = {}
        self._sections: _Sections[T] | None = None  # ``sectioned``'s
        self._exact: dict[str, tuple[_HostTable[T], ...]] = {
            h: (_HostTable(es, old_exact[h][0] if h in old_exact else None),
                *self._wildcard_chain(h))
            for h, es in exact.items()}

    def changed(self, gone: list[RouterEntry[T]], new: list[RouterEntry[T]]) -> Router[T]:
        """This router without the entries ``gone`` (of payloads it was made from; each
        entry's payload is its own object) and with ``new``, as ``Router`` would build it
        from the entries left; what the change does not touch (tables of other hosts,
        buckets of other paths) is this router's, shared. ``new`` entries rank among the
        others by their ``order`` (a compilation gives them orders between those of their
        neighbours in config order). Not for a ``sectioned`` router."""
        tables: dict[str, tuple[list[RouterEntry[T]], list[RouterEntry[T]]]] = {}
        for index, entries in enumerate((gone, new)):
            for e in entries:
                for key in _host_keys(e):
                    change = tables.get(key)
                    if change is None:
                        change = tables[key] = ([], [])
                    change[index].append(e)
        router: Router[T] = Router(())
        wildcards = self._wildcards
        default = self._default[0] if self._default else None
        owns: dict[str, _HostTable[T] | None] = {}
        for key, (out, into) in tables.items():
            if key == "*":
                default = _changed_table(default, out, into)
            elif key.startswith("*."):
                if wildcards is self._wildcards:
                    wildcards = self._wildcards.copy()
                table = _changed_table(wildcards.get(key[1:]), out, into)
                if table is None:
                    wildcards.pop(key[1:], None)
                else:
                    wildcards[key[1:]] = table
            else:
                chain = self._exact.get(key)
                owns[key] = _changed_table(chain[0] if chain is not None else None, out, into)
        router._wildcards = wildcards
        router._default = (default,) if default is not None else ()
        if wildcards is self._wildcards and router._default == self._default:
            exact = self._exact.copy()  # every chain's tables after its own are unchanged
            for host, own in owns.items():
                if own is None:
                    exact.pop(host, None)
                else:
                    exact[host] = (own, *router._wildcard_chain(host))
        else:
            own_tables: dict[str, _HostTable[T] | None] = {
                host: chain[0] for host, chain in self._exact.items()}
            own_tables.update(owns)
            exact = {host: (own, *router._wildcard_chain(host))
                     for host, own in own_tables.items() if own is not None}
        router._exact = exact
        return router

    def match(self, host: str, method: str, path: str, request: RequestView) -> T | None:
        tables = self._exact.get(host)
        if tables is None:
            tables = self._memo.get(host) if self._wildcards else self._default
            if tables is None:
                tables = self._remember(host)
        for table in tables:
            cand = table.find(method, path, request)
            if cand is not None:
                return cand.payload
        return None

    def _remember(self, host: str) -> tuple[_HostTable[T], ...]:
        sections = self._sections
        tables = self._wildcard_chain(host) if sections is None else sections.chain(host)
        if len(self._memo) < _MEMO_LIMIT:  # hosts are client-controlled: bound the memory
            self._memo[host] = tables
        return tables

    def _chain(self, host: str) -> tuple[_HostTable[T], ...]:
        """The tables ``match`` tries for ``host``, memoised or not."""
        tables = self._exact.get(host)
        return tables if tables is not None else self._wildcard_chain(host)

    def _wildcard_chain(self, host: str) -> tuple[_HostTable[T], ...]:
        # Suffixes from the longest: "a.b.example.com" probes ".b.example.com", ".example.com",
        # ".com". Starting after the first character keeps "*.example.com" off ".example.com".
        chain = []
        dot = host.find(".", 1)
        while dot > 0:
            table = self._wildcards.get(host[dot:])
            if table is not None:
                chain.append(table)
            dot = host.find(".", dot + 1)
        return (*chain, *self._default)


# --- listener sections --------------------------------------------------------------------------


class _Sections(Generic[T]):
    """The routers of a listener's sections by hostname: exact names, ``*.suffix`` wildcards
    from the longest suffix, and the section without hostname."""

    __slots__ = ("any_host", "exact", "wildcards")

    def __init__(self, sections: Iterable[tuple[str | None, Router[T]]]) -> None:
        self.exact: dict[str, Router[T]] = {}
        wildcards: dict[str, Router[T]] = {}
        self.any_host: Router[T] | None = None
        for hostname, router in sections:
            if hostname is None:
                self.any_host = router
            elif hostname.startswith("*."):
                wildcards[hostname[1:].lower()] = router  # keyed ".example.com"
            else:
                self.exact[hostname.lower()] = router
        self.wildcards = sorted(wildcards.items(), key=lambda item: -len(item[0]))

    def section(self, host: str) -> Router[T] | None:
        """The router of the section ``host`` belongs to; None: no section takes it."""
        router = self.exact.get(host)
        if router is not None:
            return router
        for suffix, router in self.wildcards:
            if host.endswith(suffix):
                return router
        return self.any_host

    def chain(self, host: str) -> tuple[_HostTable[T], ...]:
        router = self.section(host)
        return router._chain(host) if router is not None else ()


def sectioned(sections: Sequence[tuple[str | None, Router[T]]]) -> Router[T]:
    """One router over the routers of a listener's sections, each given with its hostname
    (exact, ``*.suffix`` or None): a request is matched by its host's section's router only
    (see the module doc). A single section without hostname is its router itself."""
    if len(sections) == 1 and sections[0][0] is None:
        return sections[0][1]
    router: Router[T] = Router(())
    router._sections = picker = _Sections(sections)
    hosts = {h for _, section in sections for h in section._exact}
    hosts.update(picker.exact)
    router._exact = {host: picker.chain(host) for host in hosts}
    # not empty, so that ``match`` asks ``_remember`` (which asks the sections) for a host it
    # has no chain for; not read otherwise
    router._wildcards = {"": _HostTable([], None)}
    return router


# --- shadowed entries ---------------------------------------------------------------------------

# Regexes that match every path ``Router.match`` is given ("/.*": every path that starts with
# "/", which every path a non-root prefix matches does).
_MATCH_ALL = ".*"
_MATCH_ALL_SLASH = "/.*"
CATCH_ALLS = (_MATCH_ALL, _MATCH_ALL_SLASH)


def shadowed(entries: Iterable[RouterEntry[T]]) -> dict[int, RouterEntry[T]]:
    """The entries ``Router(entries).match`` can never return, by ``order``, each with an entry
    that is always tried first and matches whenever it matches (its shadow).

    Conservative: an entry is reported only when, in every host table it is in, one other entry
    with a different payload (entries with equal payloads are one rule's matches) provably
    comes first for each request it matches:

    - an entry of the same bucket (same kind and path) ranked before it, whose method, header
      and query conditions every request matching it also meets;
    - for a regex or prefix entry, a catch-all regex (``.*``; ``/.*`` for a non-root prefix)
      tried before it, with such conditions: regexes come before every prefix, and before
      later regexes.

    Nothing else can shadow an entry: an exact path is probed first; a shorter prefix is probed
    after a longer one, and a longer prefix, an exact path or another regex covers only part of
    what it matches (regex inclusion is not worked out).
    """
    tables: dict[str, list[RouterEntry[T]]] = {}
    for e in _sharing_paths(entries):
        for host in _host_keys(e):
            tables.setdefault(host, []).append(e)
    found: dict[int, RouterEntry[T]] = {}
    alive: set[int] = set()
    for table in tables.values():
        shadows = _shadows_in_table(table)
        for e in table:
            by = shadows.get(e.order)
            if by is None:
                alive.add(e.order)
            else:
                found.setdefault(e.order, by)
    return {order: by for order, by in found.items() if order not in alive}


def _sharing_paths(entries: Iterable[RouterEntry[T]]) -> list[RouterEntry[T]]:
    """The entries that may be shadowed or shadow: without a catch-all regex, only those
    sharing a host table's bucket (kind and path) with another; an entry alone in a bucket
    is never shadowed there, and stays alone when the others are left out (most entries of
    a large configuration: 40,000 of them took a tenth of a second to check)."""
    given = list(entries)
    buckets: list[list[tuple[str, str, str]]] = []  # each entry's, as its host tables say
    seen: dict[tuple[str, str, str], int] = {}
    for e in given:
        path = e.match.path
        if path.kind == "regex" and path.value in (_MATCH_ALL, _MATCH_ALL_SLASH):
            return given
        key = _path_key(path)
        own = [(host, path.kind, key) for host in _host_keys(e)] if e.hostnames else [
            ("*", path.kind, key)]
        for bucket in own:
            seen[bucket] = seen.get(bucket, 0) + 1
        buckets.append(own)
    return [e for e, own in zip(given, buckets, strict=True)
            if any(seen[bucket] > 1 for bucket in own)]


def _shadows_in_table(entries: list[RouterEntry[T]]) -> dict[int, RouterEntry[T]]:
    buckets: dict[tuple[str, str], list[RouterEntry[T]]] = {}
    for e in entries:
        buckets.setdefault((e.match.path.kind, _path_key(e.match.path)), []).append(e)
    for bucket in buckets.values():
        if len(bucket) > 1:
            bucket.sort(key=lambda e: (-_conditions(e.match), e.order))
    # regex patterns are tried in the order of their first entry (``_compile_regexes``)
    pattern_rank = {k: min(e.order for e in es) for k, es in buckets.items() if k[0] == "regex"}
    catch_alls = [
        (pattern_rank[k], e)
        for k, es in sorted(buckets.items(), key=lambda kv: pattern_rank.get(kv[0], 0))
        if k[0] == "regex" and k[1] in (_MATCH_ALL, _MATCH_ALL_SLASH)
        for e in es
    ]
    found: dict[int, RouterEntry[T]] = {}
    for (kind, key), bucket in buckets.items():
        if len(bucket) == 1 and (kind == "exact" or not catch_alls):
            continue  # alone on its paths: nothing is tried before it there
        for i, e in enumerate(bucket):
            by = next((f for f in bucket[:i] if _takes_all(f, e)), None)
            if by is None and kind != "exact":
                by = next(
                    (
                        f for rank, f in catch_alls
                        if _catch_all_covers(f.match.path.value, kind, key)
                        and (kind == "prefix" or rank < pattern_rank[(kind, key)])
                        and _takes_all(f, e)
                    ),
                    None,
                )
            if by is not None:
                found[e.order] = by
    return found


def _catch_all_covers(pattern: str, kind: str, key: str) -> bool:
    """Whether the regex ``pattern`` matches every path an entry of ``kind``/``key`` does."""
    if pattern == _MATCH_ALL:
        return True
    return pattern == _MATCH_ALL_SLASH and kind == "prefix" and key != ""


def _takes_all(first: RouterEntry[T], later: RouterEntry[T]) -> bool:
    """Whether ``first`` (tried before ``later`` on the same paths) meets every request
    ``later`` does: a different payload and conditions that ``later``'s imply."""
    if first.payload == later.payload:
        return False
    f, e = first.match, later.match
    if f.method is not None and (e.method is None or f.method.upper() != e.method.upper()):
        return False
    return all(_implied(t, e.headers) for t in f.headers) and all(
        _implied(t, e.query) for t in f.query
    )


def _implied(test: ValueMatchIR, given: tuple[ValueMatchIR, ...]) -> bool:
    """Whether every request meeting the conditions ``given`` meets ``test``."""
    for g in given:
        if g.name != test.name:
            continue
        if test.value is None and test.regex is None:
            return True  # presence
        if g == test:
            return True
        if (
            test.regex is not None
            and g.value is not None
            and g.regex is None
            and re.fullmatch(test.regex, g.value) is not None
        ):
            return True  # an exact value the test's regex accepts
    return False
