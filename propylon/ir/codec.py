"""JSON encoding of the IR and its content hash.

``to_data`` / ``from_data`` convert between IR dataclasses and plain JSON data; ``seal`` stamps
a snapshot with the hash of its content, so two equal configurations get the same version
wherever they were translated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import operator
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from propylon.ir import model
from propylon.ir.jsontext import ESCAPED, json_sorted

T = TypeVar("T")

_HINTS: dict[type, dict[str, Any]] = {}
# The action union is stored with a tag so decoding knows which dataclass to build.
_ACTION_TAGS: dict[str, type] = {
    "forward": model.ForwardIR,
    "redirect": model.RedirectIR,
    "directResponse": model.DirectResponseIR,
}
_TAG_OF = {cls: tag for tag, cls in _ACTION_TAGS.items()}
# Fields left out of the JSON form while they hold their default: added after version 1 of the
# schema, they keep the content hash of configurations that do not use them.
_OMIT_DEFAULT: dict[type, frozenset[str]] = {
    model.SnapshotIR: frozenset({"consumers"}),
    model.ListenerIR: frozenset({"path_normalization", "proxy_protocol", "http2", "sections"}),
    model.RuleIR: frozenset({"sections"}),
    model.UpstreamIR: frozenset({"proxy_protocol_version", "protocol", "dns", "failover",
                                 "failover_threshold"}),
    model.ActiveHealthIR: frozenset({"service"}),
    model.GatewayIR: frozenset({"tracing"}),
    model.RedirectIR: frozenset({"prefix"}),
    model.ForwardIR: frozenset({"unresolved_weight"}),
    model.CertificateIR: frozenset({"certificate_pem", "private_key", "source"}),
}


def _is_default(field: dataclasses.Field[Any], value: Any) -> bool:
    if field.default is not dataclasses.MISSING:
        return bool(value == field.default)
    return field.default_factory is not dataclasses.MISSING and value == field.default_factory()


# How ``to_data`` writes each IR class, made once per class: a snapshot of 10,000 routes has
# hundreds of thousands of objects, and ``dataclasses.fields`` per object was most of the time.
# (field name, default to leave out or _KEEP), and the action tag or None
_Plan = tuple[tuple[tuple[str, Any], ...], str | None]
_PLANS: dict[type, _Plan] = {}
_KEEP = object()
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plan(cls: type) -> _Plan:
    omit = _OMIT_DEFAULT.get(cls, frozenset())
    fields = []
    for f in dataclasses.fields(cls):
        default: Any = _KEEP
        if f.name in omit:
            factory: Any = f.default_factory
            default = f.default if f.default is not dataclasses.MISSING else factory()
        fields.append((f.name, default))
    plan = _PLANS[cls] = (tuple(fields), _TAG_OF.get(cls))
    return plan


def to_data(value: Any) -> Any:
    """An IR object as plain JSON-compatible data (dicts, lists, str, numbers, None)."""
    cls = value.__class__
    if cls in _SCALARS:
        return value
    if cls is tuple or cls is list:
        return [to_data(v) for v in value]
    if cls is dict:
        return {str(k): to_data(v) for k, v in value.items()}
    plan = _PLANS.get(cls)
    if plan is None:
        if not (dataclasses.is_dataclass(value) and cls.__module__ == model.__name__):
            return _to_data_other(value)
        plan = _plan(cls)
    fields, tag = plan
    data = {}
    for name, default in fields:
        item = getattr(value, name)
        if default is _KEEP or item != default:
            data[name] = to_data(item)
    if tag is not None:
        data["@type"] = tag
    return data


def _to_data_other(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        omit = _OMIT_DEFAULT.get(type(value), frozenset())
        data = {
            f.name: to_data(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name not in omit or not _is_default(f, getattr(value, f.name))
        }
        tag = _TAG_OF.get(type(value))
        if tag is not None:
            data["@type"] = tag
        return data
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in value.items()}
    return value


def from_data(cls: type[T], data: Any) -> T:
    """Rebuild an IR object of type ``cls`` from ``to_data`` output."""
    return typing.cast(T, _decoder(cls)(data))


# One decoding function per type, made from its hints once (what ``_decode`` does, without
# looking the hints up again for each of a large snapshot's objects).
_DECODERS: dict[Any, Callable[[Any], Any]] = {}


def _decoder(tp: Any) -> Callable[[Any], Any]:
    found = _DECODERS.get(tp)
    if found is None:
        _DECODERS[tp] = lambda data: _decoder_of(tp)(data)  # while being made (recursion)
        found = _DECODERS[tp] = _decoder_of(tp)
    return found


def _decoder_of(tp: Any) -> Callable[[Any], Any]:
    if tp is model.Action or (get_origin(tp) in (typing.Union, types.UnionType)):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and tp is not model.Action:
            return _decoder(args[0])  # ``X | None``: every decoder gives None for None

        def union(data: Any) -> Any:
            if isinstance(data, dict) and "@type" in data:
                return _decoder(_ACTION_TAGS[data["@type"]])(data)
            return data
        return union
    if get_origin(tp) is tuple:
        item = _decoder(get_args(tp)[0])
        if item is _identity:
            return lambda data: None if data is None else tuple(data)
        return lambda data: None if data is None else tuple(map(item, data))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    return _identity


def _dataclass_decoder(cls: type) -> Callable[[Any], Any]:
    """``cls(**{name: decode(data[name]) for each field in data})``, unrolled into one
    function made once per class: fields in order, passed positionally (an absent field
    gets its default, or its factory's new value, as the keyword call gives it); data
    without one of the required fields takes the keyword call, which refuses it as before."""
    hints = _hints(cls)
    fields = dataclasses.fields(cls)
    decoders = [(f.name, _decoder(hints[f.name])) for f in fields]
    make = typing.cast(Any, cls)

    def by_keywords(data: Any) -> Any:
        return make(**{name: decode(data[name]) for name, decode in decoders if name in data})

    scope: dict[str, Any] = {"make": make, "by_keywords": by_keywords}
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    lines = ["def decode(data):", "    if data is None:", "        return None"]
    if required:
        lines.append(f"    if not ({' and '.join(f'{n!r} in data' for n in required)}):")
        lines.append("        return by_keywords(data)")
    args = []
    for index, (f, (name, decode)) in enumerate(zip(fields, decoders, strict=True)):
        scope[f"f{index}"] = decode
        value = f"data[{name!r}]" if decode is _identity else f"f{index}(data[{name!r}])"
        if name in required:
            args.append(value)
            continue
        if f.default is not dataclasses.MISSING:
            scope[f"d{index}"] = f.default
            absent = f"d{index}"
        else:
            scope[f"d{index}"] = f.default_factory
            absent = f"d{index}()"
        args.append(f"({value} if {name!r} in data else {absent})")
    lines.append(f"    return make({', '.join(args)})")
    exec("\n".join(lines), scope)  # made from the class's own field names
    return typing.cast(Callable[[Any], Any], scope["decode"])


def _identity(data: Any) -> Any:
    return data


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls, vars(model))
    return hints


def dumps(snapshot: model.SnapshotIR) -> str:
    pieces = _encoded_pieces(snapshot)
    if pieces is None:
        return _text(snapshot)
    return "".join(pieces)


def _encoded_pieces(snapshot: model.SnapshotIR) -> list[str] | None:
    """``dumps`` as pieces to join: the text of each rule and status is reused from the last
    encoding when it is the same object (``ir.delta.reuse_unchanged`` and the translator
    keep the objects of unchanged rules), and the rest is encoded with a placeholder where
    they go. Joined, the pieces are the text of encoding it whole; joined once (megabytes at
    10,000 routes: every copy counts). None when a placeholder cannot be found once (then
    encode it whole)."""
    memo = _PART_TEXT
    pieces: list[str] = []
    used: set[str] = set()

    def add_list(name: str, items: Sequence[Any]) -> None:
        texts = _list_texts(memo, name, items)
        used.add(name)
        listed = [","] * (2 * len(texts) - 1) if texts else []
        listed[0::2] = texts
        pieces.append("[")
        pieces.extend(listed)
        pieces.append("]")

    data = to_data(dataclasses.replace(snapshot, gateways=(), statuses=()))
    data["gateways"], data["statuses"] = _SLOT, _SLOT2
    around = _around_slots(_text(data), _SLOTS)  # keys are sorted: gateways, then statuses
    if around is None:
        return None
    pieces += (around[0], "[")
    for index, gateway in enumerate(snapshot.gateways):
        data = to_data(dataclasses.replace(gateway, rules=()))
        data["rules"] = _SLOT
        inside = _around_slots(_text(data), _SLOTS[:1])
        if inside is None:
            return None
        if index:
            pieces.append(",")
        pieces.append(inside[0])
        add_list(f"rules of {gateway.key}", gateway.rules)
        pieces.append(inside[1])
    pieces += ("]", around[1])
    add_list("statuses", snapshot.statuses)
    pieces.append(around[2])
    for name in memo.lists.keys() - used:  # a Gateway gone: its rules are not kept
        gone = memo.lists.pop(name, None)
        if gone is not None:
            _forget(memo, gone[0], set())
    return pieces


def known_text(item: Any) -> str:
    """``text_of(item)``: the last encoding's text when it holds this very object."""
    found = _PART_TEXT.get(id(item))
    if found is not None and found[0] is item:
        return found[1]
    return text_of(item)


def _list_texts(memo: PartTexts, name: str, items: Sequence[Any]) -> list[str]:
    """The texts of ``items`` in order, and ``memo`` updated to them. Against the same list
    of the last encoding (``memo.lists``), the ends already in place (``same_ends``) take
    its texts as they are, and only the items between them are looked up by identity or
    written: a change of one rule among 40,000 looks up one."""
    last = memo.lists.get(name)
    if last is None:
        texts = _texts_by_identity(memo, items)
    else:
        old_items, old_texts = last
        start, end = same_ends(items, old_items)
        middle = items[start:len(items) - end]
        texts = [*old_texts[:start], *_texts_by_identity(memo, middle),
                 *old_texts[len(old_texts) - end:]]
        _forget(memo, old_items[start:len(old_items) - end], set(map(id, middle)))
    memo.lists[name] = (items, texts)
    return texts


def _texts_by_identity(memo: PartTexts, items: Sequence[Any]) -> list[str]:
    """Each item's text from ``memo`` when it holds that very object, else written (and
    kept there): looked up, checked and kept in C (map, zip, dict.update)."""
    ids = list(map(id, items))
    found = list(map(memo.get, ids, itertools.repeat(_NOT_FOUND)))
    same = list(map(operator.is_, items, map(_OBJECT, found)))
    index = -1
    while True:
        try:
            index = same.index(False, index + 1)
        except ValueError:
            break
        item = items[index]
        found[index] = (item, text_of(item))
    memo.update(zip(ids, found, strict=True))
    return list(map(_TEXT, found))


def _forget(memo: PartTexts, items: Sequence[Any], kept: set[int]) -> None:
    """Drop the texts of ``items`` from ``memo`` (those not in ``kept``): the memo holds the
    objects of its last encoding only."""
    for item in items:
        if id(item) not in kept:
            entry = memo.get(id(item))
            if entry is not None and entry[0] is item:
                del memo[id(item)]


def same_ends(items: Sequence[Any], old: Sequence[Any]) -> tuple[int, int]:
    """How many of ``items`` are the very objects at the same place in ``old`` from the start,
    then from the end (not overlapping): compared in C, so that a change of one rule among
    thousands leaves only the few between them to walk in Python; answered at once for a
    list ``ir.delta`` rebuilt from ``old`` (``note_ends``)."""
    known = _KNOWN_ENDS.get(id(items))
    if known is not None and known[0] is items and known[1] is old:
        return known[2], known[3]
    shorter = min(len(items), len(old))
    start = next(_differing(items, old), shorter)
    if start == shorter:
        return start, 0
    end = next(_differing(reversed(items), reversed(old)), shorter)
    return start, min(end, shorter - start)


# Lists rebuilt from another (``ir.delta.loads_delta``: runs of the held list's items and new
# ones) with their ends as ``same_ends`` gives them, by id of the rebuilt list; each entry
# keeps both lists, so an id is never another list's. A change is checked by sealing, then
# compiled by the worker: about ten scans of 40,000 items per proxy, each a millisecond under
# load, answered from here. The last few only (a proxy's current and next version).
_KNOWN_ENDS: dict[int, tuple[Sequence[Any], Sequence[Any], int, int]] = {}
_KNOWN_ENDS_MAX = 16


def note_ends(items: Sequence[Any], old: Sequence[Any], start: int, end: int) -> None:
    """Remember that ``same_ends(items, old)`` is ``(start, end)``."""
    while len(_KNOWN_ENDS) >= _KNOWN_ENDS_MAX:
        try:  # the oldest first; another thread noting at once may have dropped it
            _KNOWN_ENDS.pop(next(iter(_KNOWN_ENDS)), None)
        except (StopIteration, RuntimeError):
            break
    _KNOWN_ENDS[id(items)] = (items, old, start, end)


def _differing(items: Iterable[Any], old: Iterable[Any]) -> Iterator[int]:
    """The positions where ``items`` and ``old`` hold different objects, found by iterators
    in C that stop at the first asked for."""
    return itertools.compress(itertools.count(), map(operator.is_not, items, old))


# The texts of the rules and statuses of the last encoding, by identity (each entry keeps its
# object, so an id is never another object's); placeholders a configuration cannot contain
# twice (splicing checks that each occurs exactly once, else the snapshot is encoded whole).
class PartTexts(dict[int, tuple[Any, str]]):
    """The texts of the rules and statuses of the last encoding, by identity, and each list's
    items and texts as last encoded (``lists``) and as last hashed (``digested``: the items
    and their digests), so that the next encoding or hash of a list handles only what
    changed between its ends (a change appends or edits a few rules of thousands)."""

    __slots__ = ("digested", "lists")

    def __init__(self) -> None:
        super().__init__()
        # each list of the last encoding (a Gateway's rules, the statuses): items and texts
        self.lists: dict[str, tuple[Sequence[Any], list[str]]] = {}
        # each list of the last hash: items and their ``item_digest``s, one after another;
        # one value, read and replaced whole (another thread hashing meanwhile leaves a pair
        # that belongs together)
        self.digested: dict[str, tuple[Sequence[Any], bytes]] = {}


_PART_TEXT = PartTexts()
_NOT_FOUND: tuple[Any, str] = (object(), "")
_OBJECT: Callable[[tuple[Any, str]], Any] = operator.itemgetter(0)
_TEXT: Callable[[tuple[Any, str]], str] = operator.itemgetter(1)


@contextlib.contextmanager
def part_texts(memo: PartTexts) -> Iterator[None]:
    """Encode with ``memo`` as the texts of the last encoding, then put the shared one back:
    a caller encoding several snapshots in turn (the control plane seals one shard per
    Gateway) keeps a memo per snapshot, so each finds the texts of its own unchanged rules.
    One thread at a time."""
    global _PART_TEXT
    shared, _PART_TEXT = _PART_TEXT, memo
    try:
        yield
    finally:
        _PART_TEXT = shared
_SLOT, _SLOT2 = "\x00propylon-parts\x00", "\x00propylon-statuses\x00"
_NOT_SPLICED = "\x00"


def _text(data: Any) -> str:
    return json_sorted(data if isinstance(data, dict) else to_data(data))


# -- the JSON text of an IR object, written directly ----------------------------------------
# ``text_of(x)`` is ``json.dumps(to_data(x), sort_keys=True, separators=(",", ":"))`` without
# the intermediate data: sealing a snapshot of 10,000 routes built a million dicts and lists
# only to encode them once. Each class's writer is made once, from its fields' type hints:
# fields in key order (the action tag "@type" among them), defaults left out as ``to_data``
# leaves them out, and each value written by an expression chosen for its declared type (a
# string escaped, a tuple of IR objects joined by their class's writer, a plain JSON dict by
# the ``json`` module), which falls back to ``text_of`` whenever the value's class is not the
# one declared. Values are written as ``json`` writes them (ASCII-escaped strings, ``repr`` of
# ints and floats, NaN and Infinity); anything else (subclasses of the scalars, other objects,
# dicts with keys that are not strings) goes through ``to_data`` and ``json`` as before.
_PLAIN_LEAVES = frozenset({str, int, float, bool, type(None)})


def text_of(value: Any) -> str:
    write = _WRITERS.get(value.__class__)
    if write is None:
        write = _writer_of(value.__class__)
    return write(value)


def _writer_of(cls: type) -> Callable[[Any], str]:
    found = _WRITERS.get(cls)
    if found is None:
        _WRITERS[cls] = lambda value: _WRITERS[cls](value)  # while being made (recursion)
        found = _writer(cls)
        if cls in _SHARED_CLASSES:
            found = _by_identity(found)
        _WRITERS[cls] = found
    return found


# Sections a translation shares between rules (``schema.shared_sections``: one ``ForwardIR``
# for a namespace's rules that forward alike, one spec for a policy item met again): their
# texts are kept by identity, so 30,000 rules forwarding alike write their forward a few
# times, not 30,000. IR objects, their dicts too, are never changed once made.
_SHARED_CLASSES = frozenset({model.ForwardIR})
_SHARED_TEXTS_MAX = 4096  # entries of each writer's memo, emptied when full


def _by_identity(write: Callable[[Any], str]) -> Callable[[Any], str]:
    """``write`` with the texts of the last objects written kept by identity (each entry
    keeps its object, so an id is never another object's)."""
    memo: dict[int, tuple[Any, str]] = {}

    def write_kept(value: Any) -> str:
        found = memo.get(id(value))
        if found is not None and found[0] is value:
            return found[1]
        text = write(value)
        if len(memo) >= _SHARED_TEXTS_MAX:
            memo.clear()
        memo[id(value)] = (value, text)
        return text
    return write_kept


def _list_text(items: Sequence[Any]) -> str:
    return "[" + ",".join([text_of(item) for item in items]) + "]"


def _str_list_text(items: Sequence[Any]) -> str:
    if not items:
        return "[]"
    if all(item.__class__ is str for item in items):
        return "[" + ",".join(map(ESCAPED, items)) + "]"
    return _list_text(items)


def _object_list_writer(cls: type) -> Callable[[Sequence[Any]], str]:
    """The writer of a list of ``cls`` objects (others in it written by ``text_of``)."""
    write = _writer_of(cls)

    def write_list(items: Sequence[Any]) -> str:
        if len(items) == 1:  # the usual match, backend or policy
            item = items[0]
            return "[" + (write(item) if item.__class__ is cls else text_of(item)) + "]"
        if not items:
            return "[]"
        return "[" + ",".join([write(item) if item.__class__ is cls else text_of(item)
                               for item in items]) + "]"
    return write_list


def _dict_text(data: dict[Any, Any]) -> str:
    if _plain(data):  # str keys and JSON values only: what json writes is this text
        return json_sorted(data)
    if not all(key.__class__ is str for key in data):
        return _text_via_data(data)
    return "{" + ",".join([ESCAPED(key) + ":" + text_of(data[key]) for key in sorted(data)]) + "}"


_field_dict_text = _by_identity(_dict_text)


def _plain(value: Any) -> bool:
    """Whether ``value`` is made of dicts with str keys, lists, tuples and JSON scalars only
    (exact classes: a subclass may be written otherwise by ``to_data``). One call walks it
    all (a policy's spec is a few small nested dicts)."""
    stack = [value]
    while stack:
        node = stack.pop()
        cls = node.__class__
        if cls is dict:
            for key, item in node.items():
                if key.__class__ is not str:
                    return False
                kind = item.__class__
                if kind is dict or kind is list or kind is tuple:
                    stack.append(item)
                elif kind not in _PLAIN_LEAVES:
                    return False
        elif cls is list or cls is tuple:
            for item in node:
                kind = item.__class__
                if kind is dict or kind is list or kind is tuple:
                    stack.append(item)
                elif kind not in _PLAIN_LEAVES:
                    return False
        elif cls not in _PLAIN_LEAVES:
            return False
    return True


def _float_text(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _text_via_data(value: Any) -> str:
    return json_sorted(to_data(value))


def _is_ir_class(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp.__module__ == model.__name__


def _value_expr(hint: Any, var: str, scope: dict[str, Any]) -> str:
    """A Python expression giving the text of the value in ``var``, declared as ``hint``;
    what it needs is put in ``scope``. Every expression checks the value's class and gives
    ``text_of(var)`` for any other, so a hint that does not hold changes nothing."""
    fallback = f"text_of({var})"
    if hint is str:
        return f"(escaped({var}) if {var}.__class__ is str else {fallback})"
    if hint is bool:
        return f'("true" if {var} is True else "false" if {var} is False else {fallback})'
    if hint is int:
        return f"(int_repr({var}) if {var}.__class__ is int else {fallback})"
    if hint is float:  # finite floats: x - x is 0.0 (NaN and the infinities give NaN)
        return f"(float_repr({var}) if {var}.__class__ is float and {var} - {var} == 0.0 " \
               f"else {fallback})"
    if _is_ir_class(hint):
        name = _scoped(scope, hint, "c")
        write = _scoped(scope, _writer_of(hint), "w")
        return f"({write}({var}) if {var}.__class__ is {name} else {fallback})"
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if len(others) == 1:
            inner = _value_expr(others[0], var, scope)
        elif all(_is_ir_class(a) for a in others):  # the action union
            inner = "".join(f"{_scoped(scope, _writer_of(a), 'w')}({var}) if {var}.__class__ is "
                            f"{_scoped(scope, a, 'c')} else " for a in others) + fallback
            inner = f"({inner})"
        else:
            inner = fallback
        return f'("null" if {var} is None else {inner})' if len(others) < len(args) else inner
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        if item is str:
            write_list: Callable[[Sequence[Any]], str] = _str_list_text
        elif _is_ir_class(item):
            write_list = _object_list_writer(item)
        else:
            write_list = _list_text
        name = _scoped(scope, write_list, "l")
        return (f'(("[]" if not {var} else {name}({var})) if {var}.__class__ is tuple '
                f"else {fallback})")
    if origin is dict:  # a field of an IR object (a policy's spec): kept by identity
        return f"(field_dict_text({var}) if {var}.__class__ is dict else {fallback})"
    return fallback


def _scoped(scope: dict[str, Any], value: Any, prefix: str) -> str:
    for name, known in scope.items():
        if known is value and name.startswith(prefix):
            return name
    name = f"{prefix}{sum(1 for n in scope if n.startswith(prefix))}"
    scope[name] = value
    return name


def _writer(cls: type) -> Callable[[Any], str]:
    """The writer of an IR class: its fields unrolled into one expression (a loop over a plan
    per object cost as much as building the data)."""
    if not _is_ir_class(cls):
        return _text_via_data
    fields, tag = _PLANS.get(cls) or _plan(cls)
    hints = _hints(cls)
    keyed: list[tuple[str, str | None, Any]] = [(name, name, default) for name, default in fields]
    if tag is not None:
        keyed.append(("@type", None, tag))
    keyed.sort(key=lambda item: item[0])
    scope: dict[str, Any] = {"text_of": text_of, "escaped": ESCAPED, "int_repr": int.__repr__,
                             "float_repr": float.__repr__, "field_dict_text": _field_dict_text}
    # Each key carries the comma before it, the first one too when it may be left out (then
    # the text's first character is dropped).
    first_omitted = keyed[0][1] is not None and keyed[0][2] is not _KEEP
    lines = ["def write(value):"]
    parts = []
    for index, (key, name, default) in enumerate(keyed):
        comma = "," if index or first_omitted else ""
        if name is None:  # the action tag
            scope[f"k{index}"] = f"{comma}{ESCAPED(key)}:{ESCAPED(default)}"
            parts.append(f"{{k{index}}}")
            continue
        scope[f"k{index}"] = f"{comma}{ESCAPED(key)}:"
        lines.append(f"    x{index} = value.{name}")
        expr = _value_expr(hints[name], f"x{index}", scope)
        if default is _KEEP:
            parts.append(f"{{k{index}}}{{{expr}}}")
        else:
            scope[f"d{index}"] = default
            parts.append(f'{{((k{index} + {expr}) if x{index} != d{index} else "")}}')
    text = "f'" + "".join(parts) + "'"
    if first_omitted:
        lines.append(f"    text = {text}")
        lines.append('    return "{" + text[1:] + "}"')
    else:
        lines.append(f'    return "{{" + {text} + "}}"')
    exec("\n".join(lines), scope)  # made from the class's own field names and hints
    return typing.cast(Callable[[Any], str], scope["write"])


_WRITERS: dict[type, Callable[[Any], str]] = {
    str: ESCAPED,
    int: int.__repr__,
    float: _float_text,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
    tuple: _list_text,
    list: _list_text,
    dict: _dict_text,
}


_SLOTS = (json.dumps(_SLOT), json.dumps(_SLOT2))


def _around_slots(text: str, slots: Sequence[str]) -> list[str] | None:
    """The pieces of ``text`` around each of ``slots`` (in that order), or None unless each
    occurs exactly once."""
    if any(text.count(slot) != 1 for slot in slots):
        return None
    pieces = []
    for slot in slots:
        before, found, text = text.partition(slot)
        if not found:
            return None
        pieces.append(before)
    pieces.append(text)
    return pieces


def loads(text: str | bytes) -> model.SnapshotIR:
    return from_data(model.SnapshotIR, json.loads(text))


def content_hash(
    snapshot: model.SnapshotIR, rule_digests: Mapping[str, bytes] | None = None
) -> str:
    """The version ``seal`` gives ``snapshot`` (its own ``version`` is not hashed).

    Since IR schema 2 it is the SHA-256 of the snapshot's text in which each hashed list
    (the statuses, each Gateway's rules) is written as ``list_digest`` of its items' texts
    (``ir.schema.form_hash`` computes the same from the JSON form). A change of one rule
    among 40,000 hashes that rule, then the list's item digests (16 bytes each), instead
    of the megabytes of text after it.

    ``rule_digests``: each Gateway's rules given as their ``rule_digests`` (by Gateway key)
    instead of the Gateway's own ``rules``, which are then not read: the version of a
    snapshot whose rules were made in several processes, each digesting its own."""
    memo = _PART_TEXT
    unsealed = dataclasses.replace(snapshot, version="", gateways=(), statuses=())
    data = to_data(unsealed)
    used = {"statuses"}
    gateways = []
    for gateway in snapshot.gateways:
        form = to_data(dataclasses.replace(gateway, rules=()))
        name = f"rules of {gateway.key}"
        if rule_digests is not None:
            form["rules"] = list_digest(rule_digests[gateway.key])
        else:
            form["rules"] = _list_digest(memo, name, gateway.rules)
            used.add(name)
        gateways.append(form)
    data["gateways"] = gateways
    data["statuses"] = _list_digest(memo, "statuses", snapshot.statuses)
    if rule_digests is None:  # a Gateway gone: its rules are not kept
        for name in memo.digested.keys() - used:
            gone = memo.digested.pop(name, None)
            if gone is not None:
                _forget(memo, gone[0], set())
    return hashlib.sha256(_text(data).encode()).hexdigest()[:16]


def rule_digests(rules: Sequence[model.RuleIR]) -> bytes:
    """The ``item_digest``s of ``rules``, one after another: what ``content_hash`` takes of
    a Gateway's rules, made where the rules are."""
    return b"".join([item_digest(text_of(rule)) for rule in rules])


ITEM_DIGEST_BYTES = 16  # of each item's SHA-256, in the digest of its list


def item_digest(text: str) -> bytes:
    """What a list's digest takes of one item: the start of the SHA-256 of its text."""
    return hashlib.sha256(text.encode()).digest()[:ITEM_DIGEST_BYTES]


def list_digest(item_digests: bytes) -> str:
    """How a hashed list is written in the text a version hashes: the SHA-256 of its items'
    digests, one after another."""
    return "sha256:" + hashlib.sha256(item_digests).hexdigest()


def _list_digest(memo: PartTexts, name: str, items: Sequence[Any]) -> str:
    """``list_digest`` of ``items``, and ``memo`` updated to them: against the same list of
    the last hash (``memo.digested``), the ends already in place (``same_ends``) keep their
    digests as they are (copied as bytes), and only the items between them are hashed."""
    last = memo.digested.get(name)
    old_items, old = last if last is not None else ((), b"")
    start, end = same_ends(items, old_items) if old_items else (0, 0)
    middle = items[start:len(items) - end]
    size = ITEM_DIGEST_BYTES
    digests = b"".join((old[:start * size],
                        *map(item_digest, _texts_by_identity(memo, middle)),
                        old[len(old) - end * size:] if end else b""))
    _forget(memo, old_items[start:len(old_items) - end], set(map(id, middle)))
    memo.digested[name] = (items, digests)
    return list_digest(digests)


def seal(snapshot: model.SnapshotIR) -> model.SnapshotIR:
    """The snapshot with ``version`` set to the hash of its content."""
    return dataclasses.replace(snapshot, version=content_hash(snapshot))
