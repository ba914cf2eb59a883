"""Matches: model -> IR with regexes compiled once to reject bad ones, and delegation nesting.

Nesting rule (delegation): a delegated match must lie under one of the delegating rule's
matches. For a ``prefix`` parent, an exact or prefix child lies under it segment-wise
(``/team-a`` holds ``/team-a`` and ``/team-a/x`` but not ``/team-ax``) and a regex child only
when the parent prefix is ``/``. An ``exact`` parent holds only the same exact path; a regex
parent holds nothing. The nested match keeps the child's path and adds the parent's method,
header and query conditions (a conflicting method does not nest).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from propylon.config import Match, ValueMatch
from propylon.ir import MatchIR, PathMatchIR, ValueMatchIR

IndexedMatch = tuple[int, MatchIR]  # (index in the rule's matches[], IR)
FieldError = tuple[str, str]  # (field path, message)


def build_matches(
    matches: Sequence[Match], field: str
) -> tuple[list[IndexedMatch], list[FieldError]]:
    """The rule's matches as IR, leaving out (and reporting) any with a bad regex."""
    kept: list[IndexedMatch] = []
    errors: list[FieldError] = []
    for index, match in enumerate(matches):
        bad = _regex_errors(match, f"{field}.matches[{index}]") if _has_regex(match) else None
        if bad:
            errors.extend(bad)
        else:
            kept.append((index, build_match(match)))
    return kept, errors


def build_match(match: Match) -> MatchIR:
    path, headers, query = match.path, match.headers, match.query
    return MatchIR(
        PathMatchIR(path.kind, path.value),
        match.method,
        tuple([_value_match(v, lower=True) for v in headers]) if headers else (),
        tuple([_value_match(v, lower=False) for v in query]) if query else (),
    )


def _has_regex(match: Match) -> bool:
    if match.path.regex is not None:
        return True
    for condition in (*match.headers, *match.query) if match.headers or match.query else ():
        if condition.regex is not None:
            return True
    return False


def _value_match(match: ValueMatch, lower: bool) -> ValueMatchIR:
    name = match.name.lower() if lower else match.name
    return ValueMatchIR(name=name, value=match.value, regex=match.regex)


def _regex_errors(match: Match, field: str) -> list[FieldError]:
    found = [(f"{field}.path.regex", match.path.regex)]
    found += [(f"{field}.headers[{i}].regex", h.regex) for i, h in enumerate(match.headers)]
    found += [(f"{field}.query[{i}].regex", q.regex) for i, q in enumerate(match.query)]
    return [
        (where, f'invalid regex "{pattern}": {error}')
        for where, pattern in found
        if pattern is not None and (error := _compile_error(pattern)) is not None
    ]


@functools.lru_cache(maxsize=4096)  # the same pattern on many rules is compiled once
def _compile_error(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def path_contains(parent: PathMatchIR, child: PathMatchIR) -> bool:
    if parent.kind == "exact":
        return child.kind == "exact" and child.value == parent.value
    if parent.kind != "prefix":
        return False
    if child.kind == "regex" or parent.value == "/":
        return parent.value == "/"
    base = parent.value.rstrip("/")
    return child.value == base or child.value.startswith(base + "/")


def nest_match(parent: MatchIR, child: MatchIR) -> MatchIR | None:
    """``child`` narrowed by ``parent``'s conditions, or None when it does not lie under it."""
    if not path_contains(parent.path, child.path):
        return None
    if parent.method and child.method and parent.method != child.method:
        return None
    method = child.method or parent.method
    if not (parent.headers or parent.query) and method == child.method:
        return child  # nothing of the parent's to add (most delegations: a path prefix)
    return MatchIR(
        path=child.path,
        method=method,
        headers=_union(parent.headers, child.headers),
        query=_union(parent.query, child.query),
    )


def nest_matches(
    parents: Sequence[MatchIR], children: Sequence[IndexedMatch]
) -> tuple[list[MatchIR], list[IndexedMatch]]:
    """(nested matches, children that lie under no parent match)."""
    nested: list[MatchIR] = []
    escaping: list[IndexedMatch] = []
    for index, child in children:
        found = [m for p in parents if (m := nest_match(p, child)) is not None]
        if not found:
            escaping.append((index, child))
        nested.extend(m for m in found if m not in nested)
    return nested, escaping


def _union(
    first: tuple[ValueMatchIR, ...], second: tuple[ValueMatchIR, ...]
) -> tuple[ValueMatchIR, ...]:
    return first + tuple(v for v in second if v not in first)


def describe_path(path: PathMatchIR) -> str:
    return f'{path.kind} "{path.value}"'
