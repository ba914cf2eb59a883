"""Standalone mode's configuration flow: files -> resources -> IR, with every problem listed.

Invalid resources are contained, not refused (DESIGN §2, docs/operations.md "Invalid
resources"): a resource that fails validation is Invalid and replaced (a Route's matches
answer the Gateway's ``invalidRouteResponse``, a Gateway answers 503), every other resource
is served. Only what cannot be pinned to a resource (a YAML syntax error, a document of no
known kind or without a name, an unreadable file) refuses the whole configuration, as does
a configuration with no Gateway left.

A build also records the secrets translation resolved (``BuildResult.secrets``): which files
the configuration depends on, for whom, and their identity as they were read. ``FileSource``
(``propylon/file_source.py``) watches those files and reloads when one of them is replaced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from propylon import ir
from propylon.config import ConfigError, Rejected, Resource, load_paths
from propylon.translate import translate_with_issues
from propylon.translate.consumers import (
    FileStamp,
    SecretRead,
    file_stamp,
    recording_secret_reads,
)


@dataclass
class BuildResult:
    snapshot: ir.SnapshotIR | None
    errors: list[str] = field(default_factory=list)  # the configuration is refused
    # it runs, with these resources replaced: each located error (file:line:column: ...),
    # then each Invalid resource's status
    warnings: list[str] = field(default_factory=list)
    # every secret resolved by translation; None when the build stopped before translating
    secrets: tuple[SecretRead, ...] | None = None
    # translation's findings with file:line (``severity`` "error": behind an invalid resource
    # of ``warnings``; "warning": the configuration runs as written, e.g. a shadowed rule)
    issues: tuple[ConfigError, ...] = ()


def build_snapshot(paths: Sequence[str | Path]) -> BuildResult:
    """Load and translate ``paths``, containing invalid resources (see the module doc): they
    are replaced and reported as warnings, like the control plane's statuses. Errors that
    name no resource refuse the whole set."""
    try:
        loaded = load_paths(paths)
    except OSError as exc:
        return BuildResult(None, [f"cannot read configuration: {exc}"])
    unattributed = loaded.unattributed
    if unattributed:
        return BuildResult(None, [str(e) for e in unattributed])
    return build_from_resources(loaded.resources, loaded.rejected)


def build_from_resources(
    resources: Sequence[Resource], rejected: Sequence[Rejected] = ()
) -> BuildResult:
    """Translate valid resources, containing the ``rejected`` ones; invalid resources become
    warnings, no Gateway an error."""
    with recording_secret_reads() as reads:
        translation = translate_with_issues(resources, rejected)
    snapshot = translation.snapshot
    secrets = tuple(dict.fromkeys(reads))  # a header secret is resolved once per rule
    warnings = [str(issue) for issue in translation.issues if issue.severity == "error"]
    warnings += [
        f"{s.kind} {s.key}: {s.state}: {'; '.join(s.reasons)}"
        for s in snapshot.statuses
        if s.state != "Accepted"
    ]
    if not snapshot.gateways:
        return BuildResult(None, ["no Gateway resource found: nothing to serve"], warnings,
                           secrets, translation.issues)
    return BuildResult(snapshot, [], warnings, secrets, translation.issues)


# -- secrets: what to watch, what changed, what failed ---------------------------------------
def secret_stamps(reads: Iterable[SecretRead]) -> dict[str, FileStamp | None]:
    """Each secret file read, with its identity when it was read (None: it was missing)."""
    return {r.path: r.stamp for r in reads if r.path is not None}


def changed_secret_files(stamps: Mapping[str, FileStamp | None]) -> list[str]:
    """The files of ``stamps`` that are not, now, the file that was read (rewritten, replaced,
    deleted or created)."""
    return sorted(path for path, stamp in stamps.items() if file_stamp(path) != stamp)


def secret_watch_dirs(paths: Iterable[str]) -> tuple[str, ...]:
    """The folders to watch (not recursively) to see every change of the files ``paths``.

    A file is watched through its folder, since a file replaced by a rename, or reached
    through a symlink swapped atomically (Kubernetes' ``..data``), is a new file: the folder
    of the path as written and the folder of the file it resolves to now. A folder that does
    not exist is watched through its nearest existing parent."""
    dirs: set[str] = set()
    for path in paths:
        for candidate in (os.path.dirname(path), os.path.dirname(os.path.realpath(path))):
            dirs.add(_existing_dir(candidate))
    return tuple(sorted(dirs))


def _existing_dir(path: str) -> str:
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def secret_failures(reads: Iterable[SecretRead]) -> dict[tuple[str, str], str]:
    """(resource, reference) -> message, for every secret that could not be used."""
    return {
        (r.needed_by, r.reference): f"{r.reference} needed by {r.needed_by or 'the configuration'}"
                                    f": {r.error}"
        for r in reads
        if r.error is not None
    }
