"""A proxy's disk cache of its last good IR, so it can start with no control plane.

One file per Gateway, written atomically (temporary file, fsync, rename): a crash mid-write
leaves the previous file whole. A file that does not decode or whose content hash does not
match its version is ignored.

``LatestSave`` writes it off the event loop, after the version is reported, once no newer
version was installed for ``SAVE_DELAY`` (at most ``SAVE_LONGEST`` after the oldest version
not yet written), and only the latest: a file of megabytes, its fsync and rename cost a proxy
more CPU than installing a one-Route change at 10,000 Routes, and a fleet takes changes
together, often in bursts. What waits is written at once on shutdown and before a binary
upgrade.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from propylon import ir
from propylon.ir import schema
from propylon.runtime.gc_pause import gc_paused

log = logging.getLogger("propylon.controlplane")

SAVE_DELAY = 1.0  # seconds without a newer version before the installed one is cached
SAVE_LONGEST = 10.0  # seconds a version waits at most to be cached, newer ones coming or not
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
            text = self.path.read_text(encoding="utf-8")
            with gc_paused():  # 10,000 Routes: a second less
                return schema.CURRENT.decode(text)
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
    """The latest version handed to ``later`` written to ``cache`` in a thread, once none
    came for ``delay`` seconds or ``longest`` seconds after the oldest one waiting; ``now``
    writes what waits at once. Writes never overlap, and an older version is never written
    after a newer one."""

    def __init__(self, cache: IRCache, delay: float = SAVE_DELAY,
                 longest: float = SAVE_LONGEST) -> None:
        self.cache, self.delay, self.longest = cache, delay, longest
        self._waiting: tuple[ir.SnapshotIR, str | bytes | None] | None = None
        self._task: asyncio.Future[None] | None = None
        self._writing = threading.Lock()
        self._first = self._last = 0.0  # when the oldest and the newest waiting version came

    def later(self, snapshot: ir.SnapshotIR, text: str | bytes | None = None) -> None:
        now = time.monotonic()
        if self._waiting is None:
            self._first = now
        self._last = now
        self._waiting = (snapshot, text)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._save_soon())

    def now(self) -> None:
        self._write()

    async def _save_soon(self) -> None:
        while self._waiting is not None:
            due = min(self._last + self.delay, self._first + self.longest)
            if (left := due - time.monotonic()) > 0:
                await asyncio.sleep(left)
                continue
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
