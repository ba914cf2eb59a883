"""Gateway API conditions found while converting Kubernetes objects (``config/gatewayapi.py``).

A ``Condition`` is the Gateway API's (``type``, ``status``, ``reason``, ``message``), printed
``Accepted=False NotAllowedByListeners: message``. ``Findings`` collects them per object and
per scope (``""`` for the object itself, ``parent Gateway ns/name`` for each parentRef of a
Route, with ``sectionName NAME`` and ``port N`` when the ref gives them, ``listener NAME`` for
a Gateway's listener) and records a located ``ConfigError`` for each
false condition, so ``propylon validate`` points at the line of the field that caused it.
Translation (``translate/gatewayapi_status.py``) adds what it finds and turns them into the
statuses of the objects as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from propylon.config.errors import ConfigError, Source

# condition types and reasons used (gateway-api apis/v1 shared_types.go, gateway_types.go)
ACCEPTED, RESOLVED_REFS, PROGRAMMED, PARTIALLY_INVALID = (
    "Accepted", "ResolvedRefs", "Programmed", "PartiallyInvalid")
PARENT_SCOPE = "parent Gateway"  # a route's parentRef: "parent Gateway ns/name [sectionName N]"
LISTENER_SCOPE = "listener"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""

    def __str__(self) -> str:
        text = f"{self.type}={'True' if self.status else 'False'} {self.reason}"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True, slots=True)
class Origin:
    """The Kubernetes object a converted resource comes from."""

    kind: str
    key: str  # namespace/name


@dataclass(slots=True)
class ObjectFindings:
    source: Source | None = None
    # scope -> condition type -> condition (the last one set wins, False over True)
    scopes: dict[str, dict[str, Condition]] = field(default_factory=dict)
    notes: dict[str, None] = field(default_factory=dict)  # e.g. "listener web: attachedRoutes=2"

    def conditions(self) -> list[tuple[str, Condition]]:
        return [(scope, c) for scope, by_type in self.scopes.items() for c in by_type.values()]


class Findings:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], ObjectFindings] = {}
        self.issues: list[ConfigError] = []

    def track(self, kind: str, key: str, source: Source | None) -> None:
        self.objects.setdefault((kind, key), ObjectFindings()).source = source

    def set(self, kind: str, key: str, condition: Condition, scope: str = "",
            field: str | None = None, *, warning: bool = False) -> None:
        """Record ``condition``; a false one keeps a false one of the same type and scope
        (the first problem found is the one shown), and becomes a located issue."""
        entry = self.objects.setdefault((kind, key), ObjectFindings())
        by_type = entry.scopes.setdefault(scope, {})
        held = by_type.get(condition.type)
        if held is None or (held.status and not condition.status):
            by_type[condition.type] = condition
        if not condition.status or warning:
            self._issue(kind, key, entry.source, scope, condition, field, warning)

    def note(self, kind: str, key: str, text: str) -> None:
        self.objects.setdefault((kind, key), ObjectFindings()).notes[text] = None

    def has_false(self, kind: str, key: str) -> bool:
        entry = self.objects.get((kind, key))
        return entry is not None and any(not c.status for _, c in entry.conditions())

    def _issue(self, kind: str, key: str, source: Source | None, scope: str,
               condition: Condition, field: str | None, warning: bool) -> None:
        file, line, column = "", None, None
        if source is not None:
            file, (line, column) = source.file, source.mark_of(field)
        where = f"{scope}: " if scope else ""
        self.issues.append(ConfigError(
            file, line or None, kind, key, field, where + str(condition),
            "warning" if warning else "error", column if line else None))


def refused(conditions: Sequence[tuple[str, Condition]]) -> bool:
    """Whether an object's status is Invalid: a false condition of its own, or, for a route,
    no parentRef accepting it. A parentRef's false condition leaves a route that another
    parentRef accepts Accepted (it is served there; the Gateway API keeps a status per
    parentRef), and a listener's false condition leaves its Gateway Accepted."""
    parents: dict[str, bool] = {}
    for scope, condition in conditions:
        if scope.startswith(f"{PARENT_SCOPE} "):
            parents[scope] = parents.get(scope, True) and condition.status
        elif not condition.status and not scope.startswith(f"{LISTENER_SCOPE} "):
            return True
    return bool(parents) and not any(parents.values())


def status_lines(conditions: Sequence[tuple[str, Condition]]) -> tuple[str, ...]:
    """Conditions as status reasons: ``scope: Type=Status Reason: message``."""
    return tuple(f"{scope}: {c}" if scope else str(c) for scope, c in conditions)
