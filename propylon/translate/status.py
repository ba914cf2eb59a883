"""Collecting one status per resource while the translation steps run.

Each step reports problems against the resource they belong to (``fail`` makes it Invalid,
``note`` keeps it Accepted) and which Gateways selected it. ``build`` turns the book into
sorted ``StatusIR``s. The book lives only inside one ``translate`` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from propylon.config import Resource
from propylon.ir import StatusIR


@dataclass(slots=True)
class _Entry:
    invalid: bool = False
    reasons: dict[str, None] = field(default_factory=dict)  # ordered, de-duplicated
    gateways: set[str] = field(default_factory=set)


class StatusBook:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}

    def track(self, resource: Resource) -> None:
        self._entry(resource.kind, resource.key)

    def fail(self, kind: str, key: str, reason: str) -> None:
        entry = self._entry(kind, key)
        entry.invalid = True
        entry.reasons[reason] = None

    def note(self, kind: str, key: str, reason: str) -> None:
        self._entry(kind, key).reasons[reason] = None

    def selected(self, kind: str, key: str, gateway: str) -> None:
        self._entry(kind, key).gateways.add(gateway)

    def gateways_of(self, kind: str, key: str) -> set[str]:
        return self._entry(kind, key).gateways

    def build(self) -> tuple[StatusIR, ...]:
        return tuple(
            StatusIR(
                kind=kind,
                key=key,
                state="Invalid" if entry.invalid else "Accepted",
                reasons=tuple(entry.reasons),
                gateways=tuple(sorted(entry.gateways)),
            )
            for (kind, key), entry in sorted(self._entries.items())
        )

    def _entry(self, kind: str, key: str) -> _Entry:
        return self._entries.setdefault((kind, key), _Entry())
