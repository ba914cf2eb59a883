"""The configuration fuzz target: YAML text through what ``propylon validate`` runs.

``check_config(data)``: the bytes, as UTF-8 text, go through ``load_text`` (YAML -> models),
``build_from_resources`` (translate -> IR) and ``compile_snapshot`` (what ``validate`` and
``run`` do before serving). Properties: every problem is a ``ConfigError`` naming the file,
with a line that exists in the text (or none); translation gives an IR or error strings;
the IR survives the codec the control plane ships it with (same content, same version);
compiling it either works or raises the ``ValueError``/``OSError`` that ``validate`` prints.
Any other exception, or a run over ``SLOW_SECONDS``, is a failure.

``mutate_structure(data, seed)`` is the structure-aware mutation the atheris runner uses for
most mutations: the YAML is parsed, one node is changed (a field added from the vocabulary
of the seeds, removed, replaced by a tricky value, a list item duplicated, a subtree copied
elsewhere or shared as an alias, a document duplicated or dropped) and dumped again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import yaml

from propylon.config import ConfigError, _yaml, load_text
from propylon.ir import codec
from propylon.runtime.compile import Services, compile_snapshot
from propylon.standalone import build_from_resources

FILENAME = "fuzz.yaml"
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # what YAML counts as line breaks
SLOW_SECONDS = 5.0  # a configuration that takes longer than this to check is a failure

_LOOP: asyncio.AbstractEventLoop | None = None


class PropertyFailed(AssertionError):
    pass


def close() -> None:
    """Close the event loop compilation borrows (end of a test session)."""
    global _LOOP
    if _LOOP is not None:
        _LOOP.close()
        _LOOP = None


def check_config(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    start = time.perf_counter()
    _check_parsers_agree(text)
    loaded = load_text(text, FILENAME)
    lines = len(_LINE_BREAK.findall(text)) + 1
    for error in loaded.errors:
        _check_error(error, lines)
    if loaded.ok:
        _check_translation(loaded.resources)
    elapsed = time.perf_counter() - start
    if elapsed > SLOW_SECONDS:
        raise PropertyFailed(f"checking {len(data)} bytes of configuration took {elapsed:.1f} s")


def _check_parsers_agree(text: str) -> None:
    """What the C module builds of a plain text is what PyYAML's path gives: data (types
    included), lines, columns and positions. (The run uses it whatever
    ``PROPYLON_NO_EXTENSIONS`` says; not built, nothing to compare.)"""
    if _FAST is None or (built := _FAST.load(text)) is None:
        return
    documents, errors = _yaml.parse_with_pyyaml(text, FILENAME)
    fast = [_described(doc) for doc in _yaml.documents_of(text, built)]
    if errors or fast != [_described(doc) for doc in documents]:
        raise PropertyFailed("the C YAML module and PyYAML's path disagree on this text")


def _described(doc: _yaml.Document) -> tuple[Any, ...]:
    return _typed(doc.data), doc.line, doc.column, dict(doc.marks)


def _typed(value: Any) -> Any:
    """``value`` with each scalar's type spelled out (``1 == True == 1.0`` in Python)."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(item) for item in value])
    return type(value).__name__, repr(value)


_FAST = _yaml.fast_builder()


def _check_error(error: object, lines: int) -> None:
    if not isinstance(error, ConfigError):
        raise PropertyFailed(f"a load error that is not a ConfigError: {error!r}")
    if error.file != FILENAME:
        raise PropertyFailed(f"an error that does not name the file: {error}")
    if error.line is not None and not 1 <= error.line <= lines:
        raise PropertyFailed(f"an error on line {error.line} of a {lines}-line text: {error}")
    if error.column is not None and (error.line is None or error.column < 1):
        raise PropertyFailed(f"a column without a line, or below 1: {error!r}")
    if not str(error).startswith(FILENAME):
        raise PropertyFailed(f"an error that does not start with file:line: {error}")


def _check_translation(resources: list[Any]) -> None:
    built = build_from_resources(resources)
    if not all(isinstance(m, str) and m for m in [*built.errors, *built.warnings]):
        raise PropertyFailed(f"empty or non-text messages: {built.errors} {built.warnings}")
    snapshot = built.snapshot
    if snapshot is None:
        if not built.errors:
            raise PropertyFailed("no IR and no error")
        return
    shipped = codec.loads(codec.dumps(snapshot))
    if shipped != snapshot or codec.content_hash(shipped) != snapshot.version:
        raise PropertyFailed("the IR changes through the codec the control plane ships it with")
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    # a ValueError (CompileError) or OSError is what validate prints as "error: ..."
    with contextlib.suppress(ValueError, OSError):
        compile_snapshot(snapshot, Services.scratch(_LOOP))


# -- structure-aware mutation ----------------------------------------------------------------
TRICKY: list[Any] = [
    None, True, False, 0, -1, 1, 65535, 65536, 2**63, -(2**63), 1.5, float("inf"), float("nan"),
    "", " ", "0", "1s", "0ms", "-1s", "1.5m", "10x", "99999999999h", "1e400s", "250ms", "5s",
    "/", "//", "/a/../b", "/%2e%2e/", "/a?b", "a", "*", "*.example.com", "ex*mple.com", "*.",
    "[", "(?P<x>", "(a+)+$", ".*", "\\", "::1", "[::1]", "0.0.0.0", "10.0.0.0/33", "10.0.0.0/8",
    "256.1.1.1", "ns/name", "a/b/c", "default", "Gateway", "Route", "RouteTable", "Upstream",
    "Policy", "Consumer", "propylon.dev/v1", "HTTP", "HTTPS", "GET", "get", "round_robin",
    "ring_hash", "client_ip", "connect-failure", "5xx", "x" * 300, "é", "\u2028", "a\tb", "a b",
    "-", "_", "x-y", "X-Y", "Bearer ", "https://", "http://127.0.0.1:1/", {}, [], [None], {"": ""},
]


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
VOCABULARY: list[str] = []  # field names of the seeds (set by the runner), used by _add_field


def vocabulary(seeds: list[bytes]) -> list[str]:
    """Every mapping key in the YAML of ``seeds``."""
    names: set[str] = set()
    for seed in seeds:
        try:
            names |= _keys(list(yaml.safe_load_all(seed.decode("utf-8"))))
        except yaml.YAMLError:
            continue
    return sorted(names)


def _nodes(value: Any, limit: int = 5000) -> list[tuple[Any, ...]]:
    """Paths of the nodes under ``value`` (breadth first, each object once: data may share
    or contain itself through aliases)."""
    out: list[tuple[Any, ...]] = []
    queue: deque[tuple[Any, tuple[Any, ...]]] = deque([(value, ())])
    seen: set[int] = set()
    while queue and len(out) < limit:
        item, path = queue.popleft()
        out.append(path)
        if isinstance(item, dict | list) and id(item) not in seen:
            seen.add(id(item))
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            queue += [(child, (*path, key)) for key, child in pairs]
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _keys(value: Any) -> set[str]:
    return {str(path[-1]) for path in _nodes(value) if path and isinstance(path[-1], str)}


def _replace(docs: list[Any], rng: random.Random, path: tuple[Any, ...]) -> None:
    parent, key = _get(docs, path[:-1]), path[-1]
    if rng.random() < 0.7:
        parent[key] = copy.deepcopy(rng.choice(TRICKY))
    else:  # a subtree from somewhere else
        parent[key] = copy.deepcopy(_get(docs, rng.choice(_nodes(docs))[:4] or (0,)))


def _add_field(docs: list[Any], rng: random.Random, path: tuple[Any, ...]) -> None:
    target = _get(docs, path)
    if isinstance(target, dict):
        names = VOCABULARY or sorted(_keys(docs)) or ["x"]
        target[rng.choice(names)] = copy.deepcopy(rng.choice([*TRICKY, target]))
    elif isinstance(target, list) and target:
        target.insert(rng.randrange(len(target) + 1), copy.deepcopy(rng.choice(target)))


def _alias(docs: list[Any], rng: random.Random, path: tuple[Any, ...]) -> None:
    """The same object in two places: dumped as an anchor and an alias."""
    parent, key = _get(docs, path[:-1]), path[-1]
    parent[key] = _get(docs, rng.choice(_nodes(docs))[:3] or (0,))


def _remove(docs: list[Any], rng: random.Random, path: tuple[Any, ...]) -> None:
    parent, key = _get(docs, path[:-1]), path[-1]
    del parent[key]


def _document(docs: list[Any], rng: random.Random, path: tuple[Any, ...]) -> None:
    index = rng.randrange(len(docs))
    if rng.random() < 0.5 and len(docs) > 1:
        del docs[index]
    else:
        docs.insert(rng.randrange(len(docs) + 1), copy.deepcopy(docs[index]))


_MUTATIONS: list[Callable[[list[Any], random.Random, tuple[Any, ...]], None]] = [
    _replace, _replace, _add_field, _add_field, _remove, _document, _alias,
]


def mutate_structure(data: bytes, seed: int) -> bytes | None:
    """One structural change to the YAML in ``data``; None when it is not YAML we can edit."""
    try:
        return _mutate(data, random.Random(seed))
    except Exception:  # odd data (recursive, unhashable keys ...): a byte mutation instead
        return None


def _mutate(data: bytes, rng: random.Random) -> bytes | None:
    docs = [d for d in yaml.load_all(data.decode("utf-8"), Loader=_LOADER) if d is not None]
    if not docs:
        return None
    for _ in range(1 + rng.randrange(3)):
        paths = _nodes(docs)[1:]
        if not paths:
            break
        mutation = rng.choice(_MUTATIONS)
        try:
            mutation(docs, rng, rng.choice(paths))
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    flow = rng.random() < 0.3
    text = yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False, default_flow_style=flow or None)
    return text.encode("utf-8")
