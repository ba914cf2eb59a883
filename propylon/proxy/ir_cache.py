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
from propylon.ir import schema

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
        try:  # written by this build or the one before it (a binary upgrade): either schema
            return schema.CURRENT.decode(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring cached IR %s: %s", self.path, exc)
            return None

    def save(self, snapshot: ir.SnapshotIR, text: str | bytes | None = None) -> None:
        """Keep ``text``, the IR as received (its version is the hash of that form), else
        this build's form of ``snapshot``."""
        if isinstance(text, bytes):
            text = text.decode()
        write_atomically(self.path, text if text is not None else ir.dumps(snapshot))
