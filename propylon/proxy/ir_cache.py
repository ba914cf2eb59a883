"""A proxy's disk cache of its last good IR, so it can start with no control plane.

One file per Gateway, written atomically (temporary file, fsync, rename): a crash mid-write
leaves the previous file whole. A file that does not decode or whose content hash does not
match its version is ignored.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from propylon import ir

log = logging.getLogger("propylon.controlplane")

DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "propylon"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class IRCache:
    directory: Path
    gateway: str  # "namespace/name"

    @property
    def path(self) -> Path:
        return self.directory / (self.gateway.replace("/", "__") + ".json")

    def load(self) -> ir.SnapshotIR | None:
        try:
            snapshot = ir.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring cached IR %s: %s", self.path, exc)
            return None
        if ir.content_hash(snapshot) != snapshot.version:
            log.warning("ignoring cached IR %s: content does not match its version", self.path)
            return None
        return snapshot

    def save(self, snapshot: ir.SnapshotIR) -> None:
        write_atomically(self.path, ir.dumps(snapshot))
