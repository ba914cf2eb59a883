"""Routes a product tries in order, imported as rules Propylon ranks by precedence.

Gloo (Envoy) answers a request with the first route of a VirtualService (or RouteTable) that
matches it; Propylon's router ranks the rules of a host instead: exact paths, then regexes
(in order; the same regex with more conditions first), then the longest prefix (segment-wise),
then more conditions, and only then the order (docs/reference.md, *Routing*). The import keeps
each route's matches, so where an earlier route takes requests in the product that Propylon
gives to a later one, behaviour would change silently: ``order_warnings`` reports each such
later route, naming both, at its line.

It warns only when certain that some request matches both and Propylon picks the later one:

- exact after exact (the same path), prefix after prefix (the later one longer, under the
  earlier one as the product compares, a string prefix; or the same prefix) and a regex after
  the same regex: when the later one outranks it (longer, or more conditions);
- an exact path after a prefix it starts with, or after a regex that matches it;
- a regex after a prefix that its every path starts with (``/``, or the regex's literal
  start), as Propylon tries regexes before prefixes;

and the conditions of both can hold at once (methods equal or absent; a header or query
parameter both test compared only when both are exact values, a value and a regex, or one a
presence test; two other regexes are not compared, so not reported). Delegating routes are not
compared (requests no route of the table matches fall through to the next routes).
"""

from __future__ import annotations

import re
from typing import Any

from propylon.config.imports.common import NodePath, Reader, has_top_level_alternation

Match = dict[str, Any]
Rule = dict[str, Any]

_KIND_RANK = {"exact": 0, "regex": 1, "prefix": 2}
_META = set(".^$*+?{}[]\\|()")


def order_warnings(reader: Reader, at: NodePath, routes: list[tuple[int, list[Rule]]]) -> None:
    """Warn at ``at`` + index about each route an earlier one of ``routes`` (index, the rules
    made from it) shadows in the product where Propylon picks it."""
    compared = [(i, r) for i, rules in routes for r in rules if "delegate" not in r]
    reported: set[int] = set()
    for later_at, (j, later) in enumerate(compared):
        if j in reported:
            continue
        for i, earlier in compared[:later_at]:
            if i == j:
                continue
            pair = _conflict(earlier, later)
            if pair is not None:
                reported.add(j)
                first, then = pair
                reader.warn((*at, j), (
                    f"route {j} ({_describe(then)}) comes after route {i} "
                    f"({_describe(first)}): Gloo sends the requests both match to route {i}, "
                    f"the first that matches, but Propylon to route {j} (it ranks exact "
                    "paths, regexes, longer prefixes and more conditions before the order). "
                    f"If route {j} should answer them, nothing to do; to keep Gloo's "
                    f"behaviour, remove its rule from the output or narrow its matches"))
                break


def _conflict(earlier: Rule, later: Rule) -> tuple[Match, Match] | None:
    for b in later["matches"]:
        for a in earlier["matches"]:
            if _propylon_prefers_later(a, b) and _conditions_overlap(a, b):
                return a, b
    return None


def _propylon_prefers_later(a: Match, b: Match) -> bool:
    """Whether a request exists that ``a`` (earlier) matches in the product, ``b`` (later)
    matches in Propylon, and Propylon tries ``b`` before ``a``."""
    (kind_a, path_a), = a["path"].items()
    (kind_b, path_b), = b["path"].items()
    more = _conditions(b) > _conditions(a)
    if kind_a == kind_b == "exact":
        return path_a == path_b and more
    if kind_a == kind_b == "regex":
        return path_a == path_b and more
    if kind_a == kind_b == "prefix":
        if path_a.rstrip("/") == path_b.rstrip("/"):
            return more
        # the product's prefix is a string prefix; Propylon's ranks the longer first
        return len(path_b.rstrip("/")) > len(path_a.rstrip("/")) and path_b.startswith(path_a)
    if kind_b == "exact":
        if kind_a == "prefix":
            return path_b.startswith(path_a)
        return _fullmatch(path_a, path_b)
    if (kind_a, kind_b) == ("prefix", "regex"):
        return path_a == "/" or _literal_start(path_b).startswith(path_a)
    return False  # an exact or regex path is tried before a later regex or prefix


def _conditions(match: Match) -> int:
    return (match.get("method") is not None) + len(match.get("headers") or ()) + len(
        match.get("query") or ())


def _conditions_overlap(a: Match, b: Match) -> bool:
    if a.get("method") and b.get("method") and a["method"].upper() != b["method"].upper():
        return False
    return all(_values_overlap(a.get(field) or [], b.get(field) or [], field == "headers")
               for field in ("headers", "query"))


def _values_overlap(a: list[dict[str, Any]], b: list[dict[str, Any]], fold: bool) -> bool:
    def key(test: dict[str, Any]) -> str:
        return str(test.get("name")).lower() if fold else str(test.get("name"))

    tests = {key(t): t for t in a}
    for test in b:
        other = tests.get(key(test))
        if other is not None and not _value_overlap(other, test):
            return False
    return True


def _value_overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether one value certainly meets both tests."""
    if "value" in a and "value" in b:
        return bool(a["value"] == b["value"])
    if "value" in a or "value" in b:
        value, test = (a, b) if "value" in a else (b, a)
        return _fullmatch(test["regex"], value["value"])
    return ".*" in (a.get("regex"), b.get("regex"))  # a presence test meets any


def _fullmatch(pattern: str, text: str) -> bool:
    try:
        return re.fullmatch(pattern, text) is not None
    except re.error:
        return False


def _literal_start(pattern: str) -> str:
    """The text every string ``pattern`` matches starts with (as far as read simply)."""
    if has_top_level_alternation(pattern):
        return ""
    out: list[str] = []
    i = 1 if pattern.startswith("^") else 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escaped = pattern[i + 1:i + 2]
            if not escaped or escaped.isalnum():
                break  # a class (\d), an anchor (\b) or a reference
            char, step = escaped, 2
        elif char in _META:
            break
        else:
            step = 1
        if pattern[i + step:i + step + 1] in ("?", "*", "{"):
            break  # this character is optional
        out.append(char)
        i += step
    return "".join(out)


def _describe(match: Match) -> str:
    (kind, path), = match["path"].items()
    parts = [f"{kind} {path}"]
    if match.get("method"):
        parts.append(match["method"])
    parts += [f"{field.rstrip('s')} {t.get('name')}" for field in ("headers", "query")
              for t in match.get(field) or ()]
    return ", ".join(parts)
