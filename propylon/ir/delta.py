"""Versions that share what did not change: rules and statuses kept as the same objects, and
deltas that ship only the rest.

``reuse_unchanged(new, previous)`` gives ``new`` with every rule (per Gateway, by id) and
every status (by kind and key) equal to one of ``previous`` replaced by that object: the
content, hence the version, is the same, and what follows can tell unchanged parts by identity
(the compiled filter chains, ``runtime/chain_memo.py``; the delta below).

``dumps_delta(new, base)`` encodes ``new`` for a process that holds ``base``: a rule or status
that is the very object of ``base`` is written as its index there, the rest as ``dumps``
writes it; with ``runs``, consecutive indices ``i, i+1, ..., j-1`` are written as one
``[i, j]``, so that a delta's size and its decoding follow the change, not the configuration
(for readers that asked for runs: a proxy's ``runs=1``, a supervisor's own workers).
``loads_delta(text, base)`` reads both forms and rebuilds ``new`` with ``base``'s objects in
those places; it raises ``DeltaBaseMismatch`` when ``base`` is not the version the delta was
made against, and ``IndexError``/``TypeError``/``ValueError`` on an index or run ``base`` does
not have.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from propylon.ir.codec import from_data, known_text, note_ends, same_ends, to_data
from propylon.ir.model import GatewayIR, RuleIR, SnapshotIR, StatusIR

T = TypeVar("T")


class DeltaBaseMismatch(ValueError):
    """The delta was made against another version than the one held."""


def reuse_unchanged(new: SnapshotIR, previous: SnapshotIR | None) -> SnapshotIR:
    if previous is None:
        return new
    before = {g.key: g for g in previous.gateways}
    gateways = tuple(
        dataclasses.replace(g, rules=_reused(g.rules, before[g.key].rules, _rule_key))
        if g.key in before else g
        for g in new.gateways
    )
    statuses = _reused(new.statuses, previous.statuses, _status_key)
    return dataclasses.replace(new, gateways=gateways, statuses=statuses)


# C-level getters: ``_reused`` keys every old item by one
_rule_key: Callable[[RuleIR], Hashable] = operator.attrgetter("id")
_status_key: Callable[[StatusIR], Hashable] = operator.attrgetter("kind", "key")


def _reused(items: tuple[T, ...], old: Sequence[T], key: Callable[[T], Hashable]
            ) -> tuple[T, ...]:
    start, end = same_ends(items, old)
    if start == len(items) == len(old):
        return items  # already the very objects (a version rebuilt from a delta)
    # Between the ends that are already the old objects, walked beside ``old``: an item that
    # is the next old one is kept without a lookup; the others are looked up by key among
    # the old items between the ends (an insertion has none: nothing to index), and one
    # found there puts the walk after it.
    out = list(items)
    position: dict[Hashable, int] | None = None
    after, count = start, len(old)
    for index in range(start, len(items) - end):
        item = items[index]
        if after < count and old[after] is item:
            after += 1
            continue
        if position is None:  # the old items between the ends: the others are matched
            position = dict(zip(map(key, old[start:count - end]), range(start, count - end),
                                strict=True))
        found = position.get(key(item))
        if found is not None:
            was = old[found]
            if was is item or was == item:
                out[index] = was
                after = found + 1
    return tuple(out)


# -- deltas ----------------------------------------------------------------------------------
def dumps_delta(new: SnapshotIR, base: SnapshotIR, runs: bool = False) -> str:
    before = {g.key: g for g in base.gateways}
    gateways = []
    for gateway in new.gateways:
        old = before.get(gateway.key)
        rules = _items(gateway.rules, old.rules if old is not None else (), runs)
        gateways.append(_with_fields(to_data(dataclasses.replace(gateway, rules=())),
                                     rules=rules))
    snapshot = _with_fields(to_data(dataclasses.replace(new, gateways=(), statuses=())),
                            gateways="[" + ",".join(gateways) + "]",
                            statuses=_items(new.statuses, base.statuses, runs))
    return '{"base":' + json.dumps(base.version) + ',"snapshot":' + snapshot + "}"


def _with_fields(data: dict[str, Any], **texts: str) -> str:
    """The JSON text of ``data`` with more fields, given as JSON texts (spliced, not parsed:
    a rule list's texts are the ones already written, ``codec.known_text``)."""
    head = json.dumps(data, separators=(",", ":"))[:-1]
    fields = ",".join(f"{json.dumps(name)}:{text}" for name, text in texts.items())
    return head + ("," if data else "") + fields + "}"


def _items(items: Sequence[Any], old: Sequence[Any], runs: bool = False) -> str:
    """The JSON list of each item as its index in ``old`` when it is that very object, else
    its text (``runs``: consecutive indices as one ``[first, end]``)."""
    start, middle, end = _item_parts(items, old)
    count = len(old)
    if not runs:
        listed = [*range(start), *middle, *range(count - end, count)]
    else:
        listed = _runs([*([[0, start]] if start else []), *middle,
                        *([[count - end, count]] if end else [])])
    return "[" + ",".join([_index_text(item) if type(item) is int or type(item) is list
                           else known_text(item) for item in listed]) + "]"


def _index_text(item: int | list[int]) -> str:
    return str(item) if isinstance(item, int) else f"[{item[0]},{item[1]}]"


def _item_parts(items: Sequence[Any], old: Sequence[Any]) -> tuple[int, list[Any], int]:
    """How many items at the start and at the end are the old objects in place
    (``codec.same_ends``), and the items between, each as its index in ``old`` or itself: walked
    beside ``old`` as ``_reused`` does, the index of the old objects between the ends made
    only when an item is not the next old one."""
    start, end = same_ends(items, old)
    out: list[Any] = []
    append = out.append
    index: dict[int, int] | None = None
    after, count = start, len(old)
    for item in items[start:len(items) - end]:
        if after < count and old[after] is item:
            append(after)
            after += 1
            continue
        if index is None:  # the old items between the ends: the others are named already
            index = {id(was): i for i, was in enumerate(old[start:count - end], start)}
        found = index.get(id(item))
        if found is not None and old[found] is item:
            append(found)
            after = found + 1
        else:
            append(item)
    return start, out, end


def _runs(items: list[Any]) -> list[Any]:
    """``items`` with consecutive old indices (ints, or runs already) joined into runs."""
    out: list[Any] = []
    for item in items:
        if type(item) is int:
            item = [item, item + 1]
        elif type(item) is not list:
            out.append(item)
            continue
        last = out[-1] if out else None
        if type(last) is list and last[1] == item[0]:
            last[1] = item[1]
        else:
            out.append(list(item))
    return [item[0] if type(item) is list and item[1] == item[0] + 1 else item
            for item in out]


def loads_delta(text: str | bytes, base: SnapshotIR) -> SnapshotIR:
    raw = json.loads(text)
    if raw["base"] != base.version:
        raise DeltaBaseMismatch(f"delta against {raw['base']}, holding {base.version}")
    data = raw["snapshot"]
    before = {g.key: g for g in base.gateways}
    gateways = []
    for item in data["gateways"]:
        old = before.get(item["key"])
        rules = _objects(item.pop("rules"), old.rules if old is not None else (), RuleIR)
        gateways.append(dataclasses.replace(from_data(GatewayIR, {**item, "rules": []}),
                                            rules=rules))
    statuses = _objects(data.pop("statuses"), base.statuses, StatusIR)
    snapshot = from_data(SnapshotIR, {**data, "gateways": [], "statuses": []})
    return dataclasses.replace(snapshot, gateways=tuple(gateways), statuses=statuses)


def _objects(items: list[Any], old: Sequence[T], cls: type[T]) -> tuple[T, ...]:
    """The list a delta's ``items`` make of ``old``; its ends kept in place are noted for
    ``codec.same_ends`` (found from the runs, not by comparing every item)."""
    out: list[T] = []
    spans: list[tuple[int, int]] = []  # (old index, count) of each piece; -1: a new item
    for item in items:
        if type(item) is int:
            if not -len(old) <= item < len(old):
                raise IndexError(f"index {item} out of the {len(old)} held")
            out.append(old[item])
            spans.append((item % len(old), 1))
        elif type(item) is list:
            first, end = item  # ValueError unless two
            if type(first) is not int or type(end) is not int:
                raise TypeError(f"a run of indices is two integers, not {item!r}")
            if not 0 <= first < end <= len(old):
                raise IndexError(f"run {item!r} out of the {len(old)} held")
            out += old[first:end]
            spans.append((first, end - first))
        else:
            out.append(from_data(cls, item))
            spans.append((-1, 1))
    rebuilt = tuple(out)
    note_ends(rebuilt, old, *_ends_of(spans, len(rebuilt), len(old)))
    return rebuilt


def _ends_of(spans: list[tuple[int, int]], length: int, old_length: int) -> tuple[int, int]:
    """``same_ends`` of a list made of ``spans`` of an old one: the pieces at the start that
    are the old items at the same place, then those at the end. (An old list holding one
    object twice could make the ends longer than this; shorter ends are only less work
    saved, never a wrong answer: what is between them is looked at.)"""
    start = 0
    for first, count in spans:
        if first != start:
            break
        start += count
    start = min(start, length, old_length)
    end, position = 0, length
    for first, count in reversed(spans):
        position -= count
        if first < 0 or old_length - (first + count) != length - (position + count):
            break
        end += count
    return start, min(end, min(length, old_length) - start)
