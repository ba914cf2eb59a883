"""Lines for the end of the run: sections of pytest's terminal summary that show even when every
test passed (the fuzz runs' figures, the resiliency figures, the desync corpus's counts).

A test adds its lines in the process that runs it; ``tests/conftest.py`` prints them, and under
pytest-xdist each worker hands its own to the controller (``export``, ``merge``), which prints
them all. ``FIGURES`` are also written as JSON to ``$PROPYLON_FIGURES_FILE`` when that is set.
"""

from __future__ import annotations

import json
from typing import Any

SECTIONS: dict[str, list[str]] = {}
FIGURES: dict[str, Any] = {}


def add(section: str, line: str) -> None:
    SECTIONS.setdefault(section, []).append(line)


def figure(section: str, name: str, value: Any) -> None:
    """``name = value`` in ``section``, and ``value`` kept in ``FIGURES`` under ``name``."""
    FIGURES[name] = value
    add(section, f"{name} = {value}")


def export() -> dict[str, Any]:
    """What a pytest-xdist worker sends (plain JSON types: execnet carries nothing else)."""
    return json.loads(json.dumps({"sections": SECTIONS, "figures": FIGURES}, default=str))


def merge(exported: dict[str, Any]) -> None:
    for section, lines in exported["sections"].items():
        SECTIONS.setdefault(section, []).extend(lines)
    FIGURES.update(exported["figures"])
