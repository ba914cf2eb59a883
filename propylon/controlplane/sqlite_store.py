"""The embedded store: one SQLite file (stdlib ``sqlite3``), nothing to install.

Every call runs in a worker thread behind one lock, so the event loop never waits on disk.
Versions come from one counter (``meta.revision``) bumped by every write, as etcd's revisions
are. ``changes`` fires after this process's writes and, by polling the counter once a second,
after writes made by another process on the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import uuid
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from propylon.controlplane.resources import DecodedData, StoredResource
from propylon.controlplane.store import ABSENT, BatchWrite, Conflict
from propylon.runtime.gc_pause import gc_paused

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    data TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (kind, namespace, name));
CREATE INDEX IF NOT EXISTS resources_by_version ON resources (version);
CREATE TABLE IF NOT EXISTS fleet (
    gateway TEXT NOT NULL, proxy TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (gateway, proxy));
CREATE TABLE IF NOT EXISTS rollouts (
    gateway TEXT PRIMARY KEY, record TEXT NOT NULL, revision TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stable_ir (
    gateway TEXT PRIMARY KEY, version TEXT NOT NULL, ir BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER);
INSERT OR IGNORE INTO meta VALUES (0, 0);
"""
_POLL = 1.0


class SqliteStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._changed = asyncio.Event()
        self._decoded = DecodedData()
        self._listing = _Listing()

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        def connect() -> sqlite3.Connection:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=5.0, check_same_thread=False,
                                 isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; fsync at checkpoints
            db.executescript(_SCHEMA)
            return db

        return cls(await asyncio.to_thread(connect))

    async def _run(self, fn: Any, *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                return fn(*args)

        return await asyncio.to_thread(locked)

    # -- resources -----------------------------------------------------------------------
    async def get(self, kind: str, namespace: str, name: str) -> StoredResource | None:
        row = await self._run(self._get, kind, namespace, name)
        if row is None:
            return None
        kind_, namespace_, name_, data, version = row
        return self._decoded.item(kind_, namespace_, name_, str(version), data)

    def _get(self, kind: str, namespace: str, name: str) -> tuple[Any, ...] | None:
        cur = self._db.execute(
            "SELECT kind, namespace, name, data, version FROM resources "
            "WHERE kind=? AND namespace=? AND name=?", (kind, namespace, name))
        row: tuple[Any, ...] | None = cur.fetchone()
        return row

    async def list_resources(self, kind: str | None = None) -> list[StoredResource]:
        if kind is None:
            return await self._run(self._listing.update, self._db, self._decoded)
        return await self._run(self._list_items, kind)  # decoded off the event loop too

    def _list_items(self, kind: str) -> list[StoredResource]:
        decoded = self._decoded
        with gc_paused():  # 10,000 Routes: 0.65 s of JSON the first time
            return [decoded.item(kind_, namespace, name, str(version), data)
                    for kind_, namespace, name, data, version in self._list(kind)]

    def _list(self, kind: str | None) -> list[tuple[Any, ...]]:
        sql = "SELECT kind, namespace, name, data, version FROM resources"
        cur = (self._db.execute(sql + " WHERE kind=? ORDER BY namespace, name", (kind,))
               if kind else self._db.execute(sql + " ORDER BY kind, namespace, name"))
        return cur.fetchall()

    async def put(self, kind: str, namespace: str, name: str, data: dict[str, Any],
                  expected: str | None) -> StoredResource:
        version = await self._run(self._put, kind, namespace, name, json.dumps(data), expected)
        self._changed.set()
        return StoredResource(kind, namespace, name, data, str(version))

    def _put(self, kind: str, namespace: str, name: str, text: str,
             expected: str | None) -> int:
        with self._transaction():
            self._check(kind, namespace, name, expected)
            revision = self._bump()
            self._db.execute(
                "INSERT INTO resources VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, namespace, name)"
                " DO UPDATE SET data=excluded.data, version=excluded.version",
                (kind, namespace, name, text, revision))
            return revision

    async def delete(self, kind: str, namespace: str, name: str, expected: str | None) -> bool:
        deleted = bool(await self._run(self._delete, kind, namespace, name, expected))
        if deleted:
            self._changed.set()
        return deleted

    def _delete(self, kind: str, namespace: str, name: str, expected: str | None) -> bool:
        with self._transaction():
            if self._check(kind, namespace, name, expected) is None:
                return False
            self._bump()
            self._db.execute("DELETE FROM resources WHERE kind=? AND namespace=? AND name=?",
                             (kind, namespace, name))
            return True

    async def write_batch(self, writes: Sequence[BatchWrite]) -> str:
        revision = await self._run(self._write_batch, writes)
        self._changed.set()
        return str(revision)

    def _write_batch(self, writes: Sequence[BatchWrite]) -> int:
        with self._transaction():
            for write in writes:
                self._check(write.kind, write.namespace, write.name, write.expected)
            revision = self._bump()
            for w in writes:
                if w.data is None:
                    self._db.execute(
                        "DELETE FROM resources WHERE kind=? AND namespace=? AND name=?",
                        (w.kind, w.namespace, w.name))
                else:
                    self._db.execute(
                        "INSERT INTO resources VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, "
                        "namespace, name) DO UPDATE SET data=excluded.data, "
                        "version=excluded.version",
                        (w.kind, w.namespace, w.name, json.dumps(w.data), revision))
            return revision

    def _check(self, kind: str, namespace: str, name: str, expected: str | None) -> str | None:
        """The current version; ``Conflict`` unless it is ``expected`` (``""``: absent)."""
        row = self._get(kind, namespace, name)
        current = str(row[4]) if row else None
        if expected == "" and current is not None:
            raise Conflict(f"{kind} {namespace}/{name} was created meanwhile (version {current})")
        if expected is not None and expected != (current or ""):
            raise Conflict(f"{kind} {namespace}/{name}: resourceVersion {expected} is stale "
                           f"(current: {current or 'none, it does not exist'})")
        return current

    def _bump(self) -> int:
        self._db.execute("UPDATE meta SET revision = revision + 1 WHERE id = 0")
        return int(self._db.execute("SELECT revision FROM meta WHERE id = 0").fetchone()[0])

    def _transaction(self) -> Any:
        db = self._db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, *_: Any) -> None:
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # -- fleet ---------------------------------------------------------------------------
    async def put_fleet(self, records: Mapping[tuple[str, str], dict[str, Any]]) -> None:
        rows = [(gateway, proxy, json.dumps(record))
                for (gateway, proxy), record in records.items()]

        def put() -> None:
            with self._transaction():
                self._db.executemany("INSERT OR REPLACE INTO fleet VALUES (?, ?, ?)", rows)

        await self._run(put)

    async def list_fleet(self) -> dict[str, dict[str, dict[str, Any]]]:
        def rows() -> list[tuple[str, str, str]]:
            return self._db.execute("SELECT gateway, proxy, record FROM fleet").fetchall()

        fleet: dict[str, dict[str, dict[str, Any]]] = {}
        for gateway, proxy, record in await self._run(rows):
            fleet.setdefault(gateway, {})[proxy] = json.loads(record)
        return fleet

    # -- rollouts (not resources: no revision bump, no translation) ---------------------
    async def list_rollouts(self) -> dict[str, tuple[dict[str, Any], str]]:
        def rows() -> list[tuple[str, str, str]]:
            return self._db.execute("SELECT gateway, record, revision FROM rollouts").fetchall()

        return {gateway: (json.loads(record), revision)
                for gateway, record, revision in await self._run(rows)}

    async def put_rollout(self, gateway: str, record: dict[str, Any] | None,
                          expected: str | None) -> bool:
        text = None if record is None else json.dumps(record)

        def put() -> bool:
            with self._transaction():
                row = self._db.execute("SELECT revision FROM rollouts WHERE gateway=?",
                                       (gateway,)).fetchone()
                if expected is not None and (row[0] if row else ABSENT) != expected:
                    return False
                if text is None:
                    self._db.execute("DELETE FROM rollouts WHERE gateway=?", (gateway,))
                    self._db.execute("DELETE FROM stable_ir WHERE gateway=?", (gateway,))
                else:  # a fresh revision each write: never the same twice (no ABA)
                    self._db.execute("INSERT OR REPLACE INTO rollouts VALUES (?, ?, ?)",
                                     (gateway, text, uuid.uuid4().hex))
                return True

        return bool(await self._run(put))

    async def put_stable_ir(self, gateway: str, version: str, text: str) -> None:
        packed = await asyncio.to_thread(zlib.compress, text.encode(), 6)

        def put() -> None:
            with self._transaction():
                self._db.execute("INSERT OR REPLACE INTO stable_ir VALUES (?, ?, ?)",
                                 (gateway, version, packed))

        await self._run(put)

    async def get_stable_ir(self, gateway: str) -> tuple[str, str] | None:
        def get() -> tuple[str, bytes] | None:
            row: tuple[str, bytes] | None = self._db.execute(
                "SELECT version, ir FROM stable_ir WHERE gateway=?", (gateway,)).fetchone()
            return row

        row = await self._run(get)
        if row is None:
            return None
        text = await asyncio.to_thread(zlib.decompress, row[1])
        return row[0], text.decode()

    # -- changes -------------------------------------------------------------------------
    async def changes(self) -> AsyncIterator[None]:
        def revision() -> int:
            return int(self._db.execute("SELECT revision FROM meta WHERE id = 0").fetchone()[0])

        seen = await self._run(revision)
        yield None  # watching: what was written before may be newer than the caller's listing
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), _POLL)
            self._changed.clear()
            current = await self._run(revision)
            if current != seen:
                seen = current
                yield None

    async def close(self) -> None:
        await self._run(self._db.close)


Key = tuple[str, str, str]  # kind, namespace, name


class _Listing:
    """Every stored resource, as of the revision last read: the control plane lists them all
    after each change, and reading and decoding 10,000 rows again took 35 ms of every
    change. An update reads, in one transaction, the rows written since (``version`` is the
    revision of a row's last write) and the count of rows; only when the count says some
    were deleted are all keys read (not their data). Unchanged resources stay the same
    objects (so does their data: ``_LoadedResources`` then knows them by identity)."""

    def __init__(self) -> None:
        self.revision = -1
        self.by_key: dict[Key, StoredResource] = {}
        self.order: list[Key] = []

    def update(self, db: sqlite3.Connection, decoded: DecodedData) -> list[StoredResource]:
        db.execute("BEGIN")
        try:
            revision = int(db.execute("SELECT revision FROM meta WHERE id = 0").fetchone()[0])
            if revision != self.revision:
                self._read_since(db, revision, decoded)
        finally:
            db.execute("COMMIT")
        by_key = self.by_key
        return [by_key[key] for key in self.order]

    def _read_since(self, db: sqlite3.Connection, revision: int, decoded: DecodedData
                    ) -> None:
        by_key = self.by_key
        rows = db.execute("SELECT kind, namespace, name, data, version FROM resources "
                          "WHERE version > ?", (self.revision,)).fetchall()
        count = int(db.execute("SELECT COUNT(*) FROM resources").fetchone()[0])
        added = False
        with gc_paused():
            for kind, namespace, name, data, version in rows:
                key = (kind, namespace, name)
                added = added or key not in by_key
                # through the decoded data a listing of one kind hands out too: the same
                # dictionaries (a listing of 10,000 Routes held a second copy of them all)
                by_key[key] = decoded.item(kind, namespace, name, str(version), data)
        if count != len(by_key):  # some were deleted: keep the keys still stored
            kept = set(db.execute("SELECT kind, namespace, name FROM resources").fetchall())
            gone = by_key.keys() - kept
            for key in gone:
                del by_key[key]
            decoded.forget(gone)
            added = True
        if added:
            self.order = sorted(by_key)
        self.revision = revision

