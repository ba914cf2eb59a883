"""Standalone mode's configuration flow: files -> resources -> IR, with every problem listed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from propylon import ir
from propylon.config import Resource, load_paths
from propylon.translate import translate


@dataclass
class BuildResult:
    snapshot: ir.SnapshotIR | None
    errors: list[str] = field(default_factory=list)  # the configuration is refused
    warnings: list[str] = field(default_factory=list)  # it runs, with these resources replaced


def build_snapshot(paths: Sequence[str | Path]) -> BuildResult:
    """Load and translate ``paths``. Schema errors refuse the whole set; invalid routes do not
    (they are replaced and reported as warnings, like the control plane's statuses)."""
    try:
        loaded = load_paths(paths)
    except OSError as exc:
        return BuildResult(None, [f"cannot read configuration: {exc}"])
    if loaded.errors:
        return BuildResult(None, [str(e) for e in loaded.errors])
    return build_from_resources(loaded.resources)


def build_from_resources(resources: Sequence[Resource]) -> BuildResult:
    """Translate valid resources; invalid routes become warnings, no Gateway an error."""
    snapshot = translate(resources)
    warnings = [
        f"{s.kind} {s.key}: {s.state}: {'; '.join(s.reasons)}"
        for s in snapshot.statuses
        if s.state != "Accepted"
    ]
    if not snapshot.gateways:
        return BuildResult(None, ["no Gateway resource found: nothing to serve"], warnings)
    return BuildResult(snapshot, [], warnings)
