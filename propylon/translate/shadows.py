"""Shadowed rules: a warning for each rule that can never answer on a Gateway because, for
every request it matches, another rule is chosen first.

The router decides that (``runtime.router.shadowed``, from the same precedence ``match``
applies), given the Gateway's rules as the proxy will compile them: one entry per match, in
rule order. A rule is reported when all its matches are shadowed by other rules' matches; the
warning goes to the rule's owner (a Route, or the RouteTable a delegated rule comes from),
located at the rule, and leaves it Accepted. Replaced rules are already Invalid and are not
reported, though they do shadow: they answer the Gateway's invalid-route response. Where
rules are served on some listener sections only (``RuleIR.sections``), a rule is reported when
it is shadowed in every section it is served on.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from propylon.ir import RuleIR
from propylon.ir.codec import same_ends
from propylon.runtime.router import CATCH_ALLS, RouterEntry, shadowed
from propylon.translate.context import GatewayContext
from propylon.translate.delegation import Draft


def report_shadowed(ctx: GatewayContext, rules: Sequence[tuple[Draft, RuleIR]]) -> None:
    sections = ctx.gateway.sections
    if ctx.scopes and sections is not None:
        names = [name for listed in sections.listeners.values() for name, _ in listed]
        found = _shadowed_in_sections(ctx.gateway.key, rules, names)
    else:
        found = _shadowed(_sharing_entries(ctx.gateway.key, rules), rules)
    for index, by in found.items():
        draft, winner = rules[index][0], rules[by][0]
        ctx.status.warn(
            draft.owner.kind,
            draft.owner.key,
            f"never matches on Gateway {ctx.gateway.key}: {rule_name(winner)} takes every "
            "request it matches",
            field=f"spec.rules[{draft.index}]",
        )


def _shadowed(entries: list[RouterEntry[int]], rules: Sequence[tuple[Draft, RuleIR]]
              ) -> dict[int, int]:
    """Index of each rule of ``rules`` whose every match ``entries`` (payload: the rule's
    index) shows shadowed -> index of the rule shadowing its first match. Replaced rules
    are not reported."""
    shadows = shadowed(entries)
    if not shadows:
        return {}
    own: dict[int, list[RouterEntry[int]]] = {}
    for entry in entries:
        own.setdefault(entry.payload, []).append(entry)
    found: dict[int, int] = {}
    for index, (_, rule) in enumerate(rules):
        mine = own.get(index, [])
        if (rule.replaced or not mine or len(mine) != len(rule.matches)  # one left out: alone
                or any(e.order not in shadows for e in mine)):
            continue
        found[index] = shadows[mine[0].order].payload
    return found


def _shadowed_in_sections(gateway: str, rules: Sequence[tuple[Draft, RuleIR]],
                          sections: list[str]) -> dict[int, int]:
    """``_shadowed`` on a Gateway some of whose rules are served on some listener sections
    only (``RuleIR.sections``): a rule is shadowed when it is in each section it is served
    on, by the rules served there. Each section's rules are looked at as a Gateway's are
    (``_sharing_entries``, its buckets kept under ``gateway`` and the section's name); the
    Gateway's own are not kept (``buckets_reported`` then gives the sections')."""
    with _LOCK:
        _LAST.pop(gateway, None)
        _SECTIONS.pop(gateway, None)
    found: dict[int, int] = {}
    alive: set[int] = set()
    for section in sections:
        served = [index for index, (_, rule) in enumerate(rules)
                  if not rule.sections or section in rule.sections]
        subset = [rules[index] for index in served]
        shadows = _shadowed(_sharing_entries(_section_key(gateway, section), subset), subset)
        for local, index in enumerate(served):
            if local in shadows:
                found.setdefault(index, served[shadows[local]])
            else:
                alive.add(index)
    with _LOCK:
        _SECTIONS[gateway] = tuple(_section_key(gateway, section) for section in sections)
    return {index: by for index, by in found.items() if index not in alive}


def _section_key(gateway: str, section: str) -> str:
    """Where the buckets of the rules of ``gateway`` served on ``section`` are kept."""
    return f"{gateway}\x00{section}"


def _sharing_entries(gateway: str, rules: Sequence[tuple[Draft, RuleIR]]
                     ) -> list[RouterEntry[int]]:
    """The router entries of ``rules`` (one per match, in rule order, the rule's index as
    payload) that ``shadowed`` needs to see: those sharing a bucket (host, kind, path) with
    another, or all of them when a catch-all regex may shadow any. Made only for those: most
    rules of a large configuration have paths of their own (``router._sharing_paths``)."""
    with _LOCK:  # taken: a translation of the same Gateway meanwhile starts afresh
        last = _LAST.pop(gateway, None) or _Buckets()
        _SECTIONS.pop(gateway, None)  # looked at whole now: its sections' are not its own
    ordered = [rule for _, rule in rules]
    if last.update(ordered):
        shared, catch_alls = last.shared, last.catch_alls
        with _LOCK:
            _LAST[gateway] = last
    else:  # a rule object twice: each time is a match of its own, counted here, not kept
        seen = Counter(bucket for rule in ordered for bucket in last.rules[id(rule)][2])
        shared = {bucket for bucket, count in seen.items() if count > 1}
        catch_alls = sum(last.rules[id(rule)][3] for rule in ordered)
    entries: list[RouterEntry[int]] = []
    if not shared and not catch_alls:
        return entries  # every path of its own: nothing is shadowed
    by_id = last.rules  # every rule of ``ordered``, with its buckets
    order = 0  # of the entry among all of them, as the router numbers them
    for index, rule in enumerate(ordered):
        for position, own in enumerate(by_id[id(rule)][1]):
            if catch_alls or not shared.isdisjoint(own):
                entries.append(RouterEntry(rule.hostnames, rule.matches[position], index, order))
            order += 1
    return entries


_Bucket = tuple[str, str, str]  # host table, path kind, path as the router keys it
# a rule, its buckets (one tuple per match), all of them in one list, and whether one of its
# matches is a catch-all regex
_RuleBuckets = tuple[RuleIR, list[tuple[_Bucket, ...]], list[_Bucket], bool]


class _Buckets:
    """The rules of the last call, in order and with their buckets by object (each entry
    keeps its rule, so an id is never another object's; translation keeps unchanged rules as
    the same objects), how many matches each bucket has, the buckets of more than one, and
    how many rules have a catch-all. A reload of 10,000 Routes worked out and counted the
    buckets of all 40,000 matches again, and then looked each rule up; now only the rules
    between the ends that are the very objects of the last call are (``same_ends``, in C)."""

    def __init__(self) -> None:
        self.order: list[RuleIR] = []
        self.rules: dict[int, _RuleBuckets] = {}
        self.counts: Counter[_Bucket] = Counter()
        self.shared: set[_Bucket] = set()
        self.catch_alls = 0

    def update(self, ordered: list[RuleIR]) -> bool:
        """Count ``ordered`` instead of the last rules (each of them is then in ``rules``);
        False if a rule object is in it twice: the counts are then not to be used, nor kept."""
        start, end = same_ends(ordered, self.order)
        gone = self.order[start:len(self.order) - end]
        came = ordered[start:len(ordered) - end]
        staying = {id(rule) for rule in came}
        for rule in gone:
            if id(rule) not in staying:
                entry = self.rules.pop(id(rule), None)
                if entry is not None:
                    self._uncount(entry)
        for rule in came:
            if id(rule) not in self.rules:
                entry = self.rules[id(rule)] = _rule_entry(rule)
                self._count(entry)
        self.order = ordered
        return len(self.rules) == len(ordered)

    def _count(self, entry: _RuleBuckets) -> None:
        counts, shared = self.counts, self.shared
        for bucket in entry[2]:
            now = counts[bucket] = counts[bucket] + 1
            if now == 2:
                shared.add(bucket)
        self.catch_alls += entry[3]

    def _uncount(self, entry: _RuleBuckets) -> None:
        counts, shared = self.counts, self.shared
        for bucket in entry[2]:
            left = counts[bucket] - 1
            if left:
                counts[bucket] = left
                if left == 1:
                    shared.discard(bucket)
            else:
                del counts[bucket]
        self.catch_alls -= entry[3]


_LAST: dict[str, _Buckets] = {}  # by Gateway, or by Gateway and section (``_section_key``)
# a Gateway looked at by section -> the keys of its sections' buckets in ``_LAST``
_SECTIONS: dict[str, tuple[str, ...]] = {}
_LOCK = threading.Lock()


def buckets_reported(gateway: str) -> tuple[frozenset[int], bool] | None:
    """The hashes of the buckets the last ``report_shadowed`` of ``gateway`` looked at, and
    whether one of its rules had a catch-all: rules in no common bucket, and no catch-all,
    cannot shadow each other (``translate/parts.py`` checks this between parts made in
    forked processes, which share ``hash``'s seed). None: not kept. Of a Gateway whose rules
    were looked at by listener section (``_shadowed_in_sections``), those of each of its
    sections (a rule of two parts can shadow the other only in a section serving both, so in
    a bucket of that section), None unless each section's were kept."""
    with _LOCK:
        last = _LAST.get(gateway)
        found = [last] if last is not None else [
            _LAST.get(key) for key in _SECTIONS.get(gateway, ())]
    kept = [buckets for buckets in found if buckets is not None]
    if not kept or len(kept) < len(found):  # a section's not kept (a rule object twice)
        return None
    return (frozenset(hash(bucket) for buckets in kept for bucket in buckets.counts),
            any(buckets.catch_alls > 0 for buckets in kept))


def forget_other_gateways(keys: set[str]) -> None:
    """Drop the buckets of Gateways a translation no longer has (and of their sections)."""
    with _LOCK:
        for key in _LAST.keys() - keys:
            if key.partition("\x00")[0] not in keys:
                del _LAST[key]
        for key in _SECTIONS.keys() - keys:
            del _SECTIONS[key]


def _rule_entry(rule: RuleIR) -> _RuleBuckets:
    hostnames = rule.hostnames
    hosts = tuple(dict.fromkeys([h.lower() for h in hostnames])) if hostnames else ("*",)
    buckets: list[tuple[_Bucket, ...]] = []
    every: list[_Bucket] = []
    catch_all = False
    for match in rule.matches:
        kind, value = match.path.kind, match.path.value
        if kind == "prefix":
            value = value.rstrip("/")
        elif kind == "regex" and value in CATCH_ALLS:
            catch_all = True
        own = tuple([(host, kind, value) for host in hosts])
        buckets.append(own)
        every += own
    return rule, buckets, every, catch_all


def rule_name(draft: Draft) -> str:
    """``Route shop/shop rule api`` or ``Route shop/shop rule #2``, as policy sources say."""
    return f"{draft.owner.ref} rule {draft.label}"
