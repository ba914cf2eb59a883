"""Collecting one status per resource while the translation steps run.

Each step reports problems against the resource they belong to (``fail`` makes it Invalid,
``warn`` and ``note`` keep it Accepted) and which Gateways selected it. ``build`` turns the
book into sorted ``StatusIR``s. The book lives only inside one ``translate`` call.

``fail`` and ``warn`` also record an issue: a ``ConfigError`` located at the offending node
(``field``, a dotted path such as ``spec.rules[0].forward.backends[1].upstream``, looked up in
the resource's ``Source``), so ``propylon validate`` can print ``file:line:column`` for
problems found while resolving references. Locations stay out of the IR: a status's reasons
never depend on where a resource was written, so neither does the snapshot's version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from propylon.config import ConfigError, Resource
from propylon.ir import StatusIR


@dataclass(slots=True)
class _Entry:
    invalid: bool = False
    reasons: dict[str, None] = field(default_factory=dict)  # ordered, de-duplicated
    gateways: set[str] = field(default_factory=set)
    resource: Resource | None = None  # for locating issues


class StatusBook:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._issues: dict[ConfigError, None] = {}  # ordered, de-duplicated

    def track(self, resource: Resource) -> None:
        self._entry(resource.kind, resource.key).resource = resource

    def fail(self, kind: str, key: str, reason: str, *, field: str | None = None) -> None:
        """Make the resource Invalid; ``reason`` is ``field: reason`` when a field is given."""
        entry = self._entry(kind, key)
        entry.invalid = True
        entry.reasons[_reason(field, reason)] = None
        self._issue(entry, kind, key, field, reason, "error")

    def reject(
        self, kind: str, key: str, errors: Sequence[ConfigError], reasons: Sequence[str]
    ) -> None:
        """Make a resource that failed validation Invalid: its ``errors``, located as the
        loader found them, are issues; ``reasons`` (without locations) go in its status."""
        entry = self._entry(kind, key)
        entry.invalid = True
        for reason in reasons:
            entry.reasons[reason] = None
        for error in errors:
            self._issues[error] = None

    def warn(self, kind: str, key: str, reason: str, *, field: str | None = None) -> None:
        """A probable mistake that leaves the resource Accepted (a shadowed rule)."""
        entry = self._entry(kind, key)
        entry.reasons[_reason(field, reason)] = None
        self._issue(entry, kind, key, field, reason, "warning")

    def note(self, kind: str, key: str, reason: str) -> None:
        self._entry(kind, key).reasons[reason] = None

    def selected(self, kind: str, key: str, gateway: str) -> None:
        entry = self._entries.get((kind, key))  # _entry, inlined: a call per selected Route
        if entry is None:
            entry = self._entries[(kind, key)] = _Entry()
        entry.gateways.add(gateway)

    def gateways_of(self, kind: str, key: str) -> set[str]:
        return self._entry(kind, key).gateways

    def build(self) -> tuple[StatusIR, ...]:
        """Every resource's status, in (kind, key) order; a status equal to one the last
        build made is that object (so ``ir.reuse_unchanged`` finds it by identity)."""
        global _BUILT
        last, made = _BUILT, {}
        out = []
        for (kind, key), entry in sorted(self._entries.items()):
            content = (kind, key, entry.invalid, tuple(entry.reasons),
                       tuple(sorted(entry.gateways)))
            status = last.get(content)
            if status is None:
                status = StatusIR(kind, key, "Invalid" if entry.invalid else "Accepted",
                                  content[3], content[4])
            made[content] = status
            out.append(status)
        _BUILT = made
        return tuple(out)

    def issues(self) -> tuple[ConfigError, ...]:
        """Every ``fail`` and ``warn``, located, sorted by file and line."""
        return tuple(sorted(self._issues, key=_issue_order))

    def reports(self) -> BookReports:
        """What was reported, as plain data (resources tracked and nothing more left out):
        what ``absorb`` takes into another book."""
        entries = {
            name: (entry.invalid, tuple(entry.reasons), frozenset(entry.gateways))
            for name, entry in self._entries.items()
            if entry.invalid or entry.reasons or entry.gateways
        }
        return BookReports(entries, tuple(self._issues))

    def absorb(self, reports: BookReports) -> bool:
        """Add what another book of the same resources reported, as if this book's steps
        and then the other's had reported to one book. False, and this book unusable, when
        both gave one resource reasons the other did not (their order, interleaved, is
        unknown)."""
        for (kind, key), (invalid, reasons, gateways) in reports.entries.items():
            entry = self._entry(kind, key)
            entry.invalid |= invalid
            entry.gateways |= gateways
            mine = tuple(entry.reasons)
            if reasons[:len(mine)] == mine:
                entry.reasons.update(dict.fromkeys(reasons[len(mine):]))
            elif mine[:len(reasons)] != reasons:
                return False
        self._issues.update(dict.fromkeys(reports.issues))
        return True

    def _entry(self, kind: str, key: str) -> _Entry:
        entry = self._entries.get((kind, key))
        if entry is None:  # not setdefault: an _Entry made for nothing costs a dict and a set
            entry = self._entries[(kind, key)] = _Entry()
        return entry

    def _issue(
        self, entry: _Entry, kind: str, key: str, field: str | None, message: str, severity: str
    ) -> None:
        source = entry.resource.source if entry.resource is not None else None
        file, line, column = "", None, None
        if source is not None:
            file, (line, column) = source.file, source.mark_of(field)
        # line 0: a resource given as data (the control plane's API), not as YAML text
        issue = ConfigError(file, line or None, kind, key, field, message, severity,
                            column if line else None)
        self._issues[issue] = None


@dataclass(frozen=True, slots=True)
class BookReports:
    """A ``StatusBook``'s reports as plain data: (kind, key) -> (invalid, reasons, the
    Gateways that selected it), and its issues."""

    entries: dict[tuple[str, str], tuple[bool, tuple[str, ...], frozenset[str]]]
    issues: tuple[ConfigError, ...]


# The statuses the last build made, by content (built again, a status's object is the same
# while it is: at 10,000 Routes, a change built 10,000 equal statuses, each then compared with
# the last version's). Replaced whole by each build; builds in other threads only miss it.
_BUILT: dict[tuple[str, str, bool, tuple[str, ...], tuple[str, ...]], StatusIR] = {}


def _reason(field: str | None, reason: str) -> str:
    return f"{field}: {reason}" if field else reason


def _issue_order(issue: ConfigError) -> tuple[str, int, int, str, str, str, str]:
    return (
        issue.file, issue.line or 0, issue.column or 0, issue.kind or "", issue.name or "",
        issue.field or "", issue.message,
    )
