"""``propylon validate``: every problem of a configuration, located where it can be.

A problem prints as ``file:line[:column]: message`` (no severity prefix, the shape CI problem
matchers read; a problem with no known file is its message alone), or as a JSON object with
``file``, ``line``, ``column`` (null when unknown), ``message`` and ``severity``.

Where a location comes from, best first: a ``ConfigError`` of the loader or of translation
(file, line and column of the offending YAML node); a ``file:line[:column]: `` the message itself
starts with; the source of the first resource (``Kind namespace/name``) the message names.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from propylon.config import ConfigError, Resource, Source
from propylon.config.files import read_texts
from propylon.config.kubernetes import route_object_key
from propylon.config.loader import LoadResult, Outlines, Rejected, load_parsed
from propylon.config.outlines import outline_key
from propylon.config.parse_pool import Parsed, parse_all
from propylon.ir import seal
from propylon.runtime.forked import ForkedCall
from propylon.translate.parts import (
    Part,
    RouteRange,
    describe,
    merge,
    reach_tables,
    route_ranges,
)
from propylon.translate.translator import Booked, translate_booked

if TYPE_CHECKING:
    from propylon.ir import SnapshotIR, StatusIR

_LOCATED = re.compile(r"(?P<file>[^:\n]+):(?P<line>\d+)(?::(?P<column>\d+))?: (?P<message>.*)",
                      re.DOTALL)
_RESOURCE_REF = re.compile(
    r"\b(?:Gateway|RouteTable|Route|Upstream|Policy|Consumer) [\w.-]+/[\w.-]+(?![\w.-])")


@dataclass(frozen=True, slots=True)
class Problem:
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    severity: str = "error"  # error fails validate; warning does not

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message

    @property
    def location(self) -> str:
        parts = [self.file, self.line, self.column]
        known = parts[: parts.index(None)] if None in parts else parts
        return ":".join(str(part) for part in known)

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column,
                "message": self.message, "severity": self.severity}

    @classmethod
    def from_config_error(cls, error: ConfigError) -> Problem:
        what = " ".join(part for part in (error.kind, error.name) if part)
        message = ": ".join(part for part in (what, error.field, error.message) if part)
        # file "": a resource the control plane's API gave as data, not read from a file
        return cls(message, error.file or None, error.line, error.column if error.line else None,
                   error.severity)


def locate(text: str, sources: Mapping[str, Source]) -> Problem:
    """A problem from a message; ``sources`` maps ``Kind namespace/name`` to where it is."""
    located = _LOCATED.match(text)
    if located is not None:
        column = located["column"]
        return Problem(located["message"], located["file"], int(located["line"]),
                       int(column) if column else None)
    for ref in _RESOURCE_REF.findall(text):
        source = sources.get(ref)
        if source is not None:
            return Problem(text, source.file, source.line, source.column)
    return Problem(text)


@dataclass
class Check:
    problems: list[Problem] = field(default_factory=list)
    built: Built | None = None  # what was built, when it was

    @property
    def failed(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {"valid": not self.failed,
                "version": self.built.version if self.built and not self.failed else None,
                "problems": [p.to_json() for p in self.problems]}


@dataclass(frozen=True, slots=True)
class Built:
    gateways: int
    rules: int
    version: str

    @classmethod
    def of(cls, snapshot: SnapshotIR) -> Built:
        return cls(len(snapshot.gateways), sum(len(g.rules) for g in snapshot.gateways),
                   snapshot.version)


def check_paths(paths: Sequence[str | Path], keep: list[object] | None = None) -> Check:
    """Load, translate and compile ``paths`` as ``run`` would, collecting every problem.
    ``keep``: what the check built is left in it, for a command that exits without freeing
    it (freeing 10,000 Routes' documents, resources and translation object by object took a
    twentieth to a tenth of a second of ``validate``)."""
    from propylon.runtime.gc_pause import gc_paused

    with gc_paused():  # one pause for every stage (see gc_pause.py)
        return _check_paths(paths, keep if keep is not None else [])


def _check_paths(paths: Sequence[str | Path], keep: list[object]) -> Check:
    from propylon.standalone import build_from_resources

    unread: list[ConfigError] = []
    try:
        texts = read_texts(paths, unread)
    except OSError as exc:
        return Check([Problem(f"cannot read configuration: {exc}", exc.filename)])
    parsed = parse_all(texts)  # one-shot: every core is its own (begun by ``read_ahead``)
    keep += (texts, parsed)
    keys = [found for documents, _ in parsed for doc in documents
            if (found := outline_key(doc.data) or _route_object(doc.data)) is not None]
    routes = [key for kind, key in keys if kind == "Route"]
    if not unread and len(routes) >= SPLIT_FROM_ROUTES and (os.cpu_count() or 1) > 1:
        tables = [key for kind, key in keys if kind == "RouteTable"]
        check = _split_check(texts, parsed, routes, tables, keep)
        if check is not None:
            return check
    loaded = load_parsed(texts, parsed)
    keep.append(loaded)
    if unread or loaded.unattributed:  # ``run`` would serve none of it: nothing to translate
        return Check([Problem.from_config_error(e) for e in (*unread, *loaded.errors)])
    sources = _Sources(loaded.resources)
    # resources that failed validation are contained as ``run`` contains them (their errors
    # come back as the translation's issues), and the rest is checked
    result = build_from_resources(loaded.resources, loaded.rejected, sealed=False)
    keep.append(result)
    problems = [locate(error, sources) for error in result.errors]
    if result.snapshot is None:
        return Check(problems + [Problem.from_config_error(i) for i in result.issues])
    # the check compiles in a child while the snapshot is hashed for its version here
    compiled = ForkedCall(functools.partial(_compile_problem, result.snapshot, []))
    snapshot = seal(result.snapshot)
    keep.append(snapshot)
    problems += translation_problems(result.issues, snapshot.statuses, compiled.result(),
                                     sources)
    return Check(problems, Built.of(snapshot))


def translation_problems(
    issues: Sequence[ConfigError], statuses: Sequence[StatusIR], compile_problem: str | None,
    sources: Mapping[str, Source],
) -> list[Problem]:
    """A translation's issues, its Invalid resources without one, and what compiling it
    refused, in that order."""
    problems = [Problem.from_config_error(issue) for issue in issues]
    problems += unlocated_invalid(statuses, issues, sources)
    if compile_problem is not None:
        problems.append(locate(compile_problem, sources))
    return problems


# From this many Routes, ``validate`` loads, translates and checks them in two parts, one per
# core (``translate/parts.py``): at 10,000 Routes that was most of its time, on one core.
SPLIT_FROM_ROUTES = 1_000
_KEPT: list[object] = []  # what this process compiled, never freed (``validate`` exits)


@dataclass(frozen=True, slots=True)
class _PartCheck:
    part: Part
    compile_problem: str | None


def _split_check(
    texts: Sequence[tuple[str, str]], parsed: Sequence[Parsed], routes: Sequence[str],
    tables: Sequence[str], keep: list[object],
) -> Check | None:
    """The check made in two parts, this process's and a forked child's, each validating
    and translating its own Routes (the other's only outlined; those that fail validation
    contained), or None when the parts cannot say what the whole would (an error that names
    no resource, a RouteTable one part needs that is not valid, or ``parts.merge``): the
    caller then checks the whole. Each validates the RouteTables of its own range of their
    keys (so that every one is) and those its Routes delegate to; the others it outlines."""
    first, second = route_ranges(routes, (0.5, 0.5))
    first_tables, second_tables = route_ranges(tables, (0.5, 0.5))
    child = ForkedCall(functools.partial(_part_check, texts, parsed, second, second_tables))
    loaded = _part_loaded(texts, parsed, first, first_tables)
    if loaded is None:
        child.cancel()
        return None
    booked = translate_booked(loaded.resources, loaded.rejected, routes=first)
    keep += (loaded, booked)
    own = _checked(booked, loaded.rejected)
    theirs = child.result()
    if own is None or theirs is None:
        return None
    merged = merge(booked, own.part, [theirs.part])
    keep.append(merged)
    if merged is None or not merged.translation.snapshot.gateways:
        return None
    translation = merged.translation
    problems = translation_problems(
        translation.issues, translation.snapshot.statuses,
        own.compile_problem or theirs.compile_problem, _Sources(loaded.resources))
    built = Built(len(translation.snapshot.gateways), merged.rules, merged.version)
    return Check(problems, built)


def _part_check(texts: Sequence[tuple[str, str]], parsed: Sequence[Parsed],
                routes: RouteRange, tables: RouteRange) -> _PartCheck | None:
    loaded = _part_loaded(texts, parsed, routes, tables)
    if loaded is None:
        return None
    return _checked(translate_booked(loaded.resources, loaded.rejected, routes=routes),
                    loaded.rejected)


def _part_loaded(texts: Sequence[tuple[str, str]], parsed: Sequence[Parsed],
                 routes: RouteRange, tables: RouteRange) -> LoadResult | None:
    """A part's resources: its Routes and RouteTables validated, every other outlined, the
    resources that fail validation rejected (contained by translation, as ``run`` contains
    them); None if an error names no resource (``run`` would serve nothing) or a RouteTable
    its Routes delegate to is not valid."""
    outlines = Outlines(lambda kind, key: key not in (routes if kind == "Route" else tables))
    loaded = load_parsed(texts, parsed, outline=outlines)
    if loaded.unattributed or not reach_tables(
            loaded.resources, routes, lambda table: outlines.validated(loaded, table)):
        return None
    return loaded


def _route_object(data: Any) -> tuple[str, str] | None:
    """("Route", the key of the Route it becomes) of an HTTPRoute, GRPCRoute or Ingress
    document: those are split between the parts as Routes are (``expand_kubernetes``'
    ``validated``)."""
    key = route_object_key(data)
    return None if key is None else ("Route", key)


def _checked(booked: Booked, rejected: Sequence[Rejected]) -> _PartCheck | None:
    """A part's description and compile check; None if one of its policies cannot be
    built (containment changes the snapshot) or a Route converted from a Kubernetes object
    did not validate (``Expansion.differs``): the whole is checked instead."""
    from propylon.standalone import contain_unbuildable

    snapshot, _ = contain_unbuildable(booked.snapshot, (), {}, sealed=False)
    if snapshot is not booked.snapshot or booked.expansion.differs:
        return None
    return _PartCheck(describe(booked, rejected), _compile_problem(snapshot, _KEPT))


class _Sources(Mapping[str, Source]):
    """Where each resource is, by ``Kind namespace/name``: looked up only to locate a
    problem, so only then indexed (10,000 Routes: 0.07 s otherwise)."""

    def __init__(self, resources: Sequence[Resource]) -> None:
        self._resources = resources
        self._index: dict[str, Source] | None = None

    @property
    def index(self) -> dict[str, Source]:
        if self._index is None:
            self._index = {r.ref: r.source for r in self._resources if r.source is not None}
        return self._index

    def __getitem__(self, ref: str) -> Source:
        return self.index[ref]

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


def unlocated_invalid(
    statuses: Sequence[StatusIR], issues: Sequence[ConfigError], sources: Mapping[str, Source]
) -> list[Problem]:
    """Invalid resources for which translation gave no located error, at their resource.

    Translation reports every reason it makes a resource Invalid as an issue; this keeps
    validate failing on an Invalid resource even if some step ever did not."""
    located = {(issue.kind, issue.name) for issue in issues if issue.severity == "error"}
    problems = []
    for status in statuses:
        if status.state == "Accepted" or (status.kind, status.key) in located:
            continue
        ref = f"{status.kind} {status.key}"
        message = f"{ref}: {status.state}: {'; '.join(status.reasons)}"
        source = sources.get(ref)
        problems.append(Problem(message, source.file, source.line, source.column) if source
                        else Problem(message))
    return problems


def _compile_problem(snapshot: SnapshotIR, keep: list[object]) -> str | None:
    """Compile ``snapshot`` as a proxy would before serving it (nothing is started), and load
    its listeners' certificates: what ``run`` would refuse when installing it (CA files,
    keys, clashing listeners), or None.
    What it compiled is left in ``keep``, alive as long as the caller keeps that list: a
    forked child ends without freeing it object by object (a tenth of a second at 10,000
    Routes, which ``validate`` waited for)."""
    import asyncio

    from propylon.proxy.tls import listener_tls
    from propylon.runtime.compile import Services, compile_snapshot

    async def check() -> str | None:
        services = Services.scratch(asyncio.get_running_loop())
        services.once = True  # nothing is kept for a next check
        try:
            keep.append(compile_snapshot(snapshot, services))
            for gateway in snapshot.gateways:
                for listener in gateway.listeners:
                    listener_tls(gateway.key, listener)
        except Exception as exc:
            return str(exc)
        return None

    return asyncio.run(check())
