"""Label selectors for ``apply -l`` and ``--prune``, as Kubernetes writes them.

Two forms of one thing: the command-line text ``kubectl -l`` takes (``team=shop``,
``team==shop``, ``tier!=web``, ``env in (a,b)``, ``env notin (a)``, ``owner``, ``!legacy``;
comma-separated, all must hold) and the API's JSON, a Kubernetes ``LabelSelector``
(``matchLabels`` plus ``matchExpressions`` of ``key``, ``operator`` In/NotIn/Exists/
DoesNotExist and ``values``). As in Kubernetes, ``!=`` and ``notin`` also match resources
without the label. A selector is *bounded* when it requires some label to be present: only
such a selector may choose what ``--prune`` deletes, so it can never select everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_TERM = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<absent>[^\s,!=()]+)"
    r"|(?P<key>[^\s,!=()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,!=()]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?)\s*(?:,|$)")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # one of _OPERATORS
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        inside = present and labels[self.key] in self.values
        return inside if self.operator == "In" else not inside


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: dict[str, str] | None) -> bool:
        return all(r.matches(labels or {}) for r in self.requirements)

    @property
    def bounded(self) -> bool:
        return any(r.operator in ("In", "Exists") for r in self.requirements)

    def to_json(self) -> dict[str, Any]:
        """The Kubernetes ``LabelSelector`` form (``matchExpressions`` only)."""
        return {"matchExpressions": [
            {"key": r.key, "operator": r.operator, "values": list(r.values)}
            for r in self.requirements]}


def parse_selector(text: str) -> LabelSelector:
    """``kubectl -l`` syntax; ValueError naming the part it cannot read."""
    requirements: list[Requirement] = []
    position = 0
    while position < len(text):
        found = _TERM.match(text, position)
        if found is None or found.end() == position:
            raise ValueError(f"cannot read the label selector at {text[position:]!r}: "
                             "expected key=value, key!=value, key in (a,b), key or !key")
        requirements.append(_requirement(found))
        position = found.end()
    if not requirements:
        raise ValueError("the label selector is empty")
    return LabelSelector(tuple(requirements))


def _requirement(found: re.Match[str]) -> Requirement:
    if found["absent"]:
        return Requirement(found["absent"], "DoesNotExist")
    key = found["key"]
    if found["op"]:
        return Requirement(key, "NotIn" if found["op"] == "!=" else "In", (found["value"],))
    if found["set"]:
        values = tuple(v.strip() for v in found["values"].split(",") if v.strip())
        return Requirement(key, "In" if found["set"] == "in" else "NotIn", values)
    return Requirement(key, "Exists")


def selector_from_json(data: Any) -> LabelSelector:
    """The API's ``LabelSelector``; ValueError with the reason when it is not one."""
    if not isinstance(data, dict) or set(data) - {"matchLabels", "matchExpressions"}:
        raise ValueError("a selector is an object with matchLabels and/or matchExpressions")
    labels = data.get("matchLabels", {})
    expressions = data.get("matchExpressions", [])
    if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError("matchLabels maps label names to strings")
    if not isinstance(expressions, list):
        raise ValueError("matchExpressions is a list")
    requirements = [Requirement(k, "In", (v,)) for k, v in sorted(labels.items())]
    requirements += [_expression(e) for e in expressions]
    return LabelSelector(tuple(requirements))


def _expression(data: Any) -> Requirement:
    if not isinstance(data, dict) or not isinstance(data.get("key"), str) \
            or data.get("operator") not in _OPERATORS:
        raise ValueError(f"a matchExpression needs key and operator (one of "
                         f"{', '.join(_OPERATORS)}), got {data!r}")
    values = data.get("values", [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("matchExpressions[].values is a list of strings")
    if (data["operator"] in ("In", "NotIn")) != bool(values):
        raise ValueError(f"{data['operator']} {'needs' if not values else 'takes no'} values")
    return Requirement(data["key"], data["operator"], tuple(values))
