"""A proxy's disk cache of its last good IR, so it can start with no control plane.

One file per Gateway, written atomically (temporary file, fsync, rename): a crash mid-write
leaves the previous file whole. A file that does not decode or whose content hash does not
match its version is ignored.

``LatestSave`` writes it off the event loop, after the version is reported, and only the
latest of the versions installed within ``SAVE_DELAY`` (a file of megabytes, its fsync and
rename cost a proxy about as much CPU as compiling a change, and a fleet takes changes
together); what waits is written at once on shutdown and before a binary upgrade.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from propylon import ir
from propylon.ir import schema

log = logging.getLogger("propylon.controlplane")

SAVE_DELAY = 1.0  # seconds an installed version waits to be cached (a newer one replaces it)
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


class LatestSave:
    """The latest version handed to ``later`` written to ``cache`` after ``delay`` seconds,
    in a thread; ``now`` writes what waits at once. Writes never overlap, and an older
    version is never written after a newer one."""

    def __init__(self, cache: IRCache, delay: float = SAVE_DELAY) -> None:
        self.cache, self.delay = cache, delay
        self._waiting: tuple[ir.SnapshotIR, str | bytes | None] | None = None
        self._task: asyncio.Future[None] | None = None
        self._writing = threading.Lock()

    def later(self, snapshot: ir.SnapshotIR, text: str | bytes | None = None) -> None:
        self._waiting = (snapshot, text)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._save_soon())

    def now(self) -> None:
        self._write()

    async def _save_soon(self) -> None:
        await asyncio.sleep(self.delay)
        while self._waiting is not None:
            await asyncio.to_thread(self._write)

    def _write(self) -> None:
        with self._writing:
            waiting, self._waiting = self._waiting, None
            if waiting is None:
                return
            try:
                self.cache.save(*waiting)
            except OSError as exc:
                log.warning("cannot cache IR in %s: %s", self.cache.path, exc)
