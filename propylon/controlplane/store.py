"""The control plane's state store: the interface both stores implement, and ``open_store``.

A store holds resources (with a version per resource, a string that changes on every write),
fleet records (what each connected proxy reported) and each Gateway's rollout record (its
phase, stable version and candidate, ``rollouts.py``) with the stable version's IR, so that a
restarted control plane, or another replica, goes on serving the stable version.
``changes`` yields once per batch of resource changes made by anyone, this replica or another
one sharing the store; the control plane then re-reads the resources. Every method is a
coroutine that never blocks the loop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from propylon.controlplane.resources import StoredResource


class StoreError(Exception):
    """The store cannot be reached or refused the operation (HTTP 503)."""


class BatchTooLarge(StoreError):
    """The store refuses a transaction this big (HTTP 413); the message says which limit."""


class Conflict(Exception):
    """The write named a resourceVersion that is no longer current (HTTP 409)."""


ABSENT = ""  # a BatchWrite's ``expected`` when the resource must not exist yet


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """One write of a batch: ``data`` replaces the resource, or None deletes it. ``expected``
    is the version the resource must have when the batch commits (``ABSENT``: it must not
    exist; None: whatever it is)."""

    kind: str
    namespace: str
    name: str
    data: dict[str, Any] | None
    expected: str | None


class Store(Protocol):
    async def get(self, kind: str, namespace: str, name: str) -> StoredResource | None: ...

    async def list_resources(self, kind: str | None = None) -> list[StoredResource]: ...

    async def put(self, kind: str, namespace: str, name: str, data: dict[str, Any],
                  expected: str | None) -> StoredResource:
        """Create or replace; with ``expected`` the current version must equal it."""
        ...

    async def delete(self, kind: str, namespace: str, name: str, expected: str | None) -> bool:
        """False when there was nothing to delete; ``Conflict`` on a stale ``expected``."""
        ...

    async def write_batch(self, writes: Sequence[BatchWrite]) -> str:
        """Every write or none, as one new revision (returned; every written resource gets it
        as its version). ``Conflict`` when one ``expected`` no longer holds; ``BatchTooLarge``
        when the store refuses the transaction's size."""
        ...

    async def put_fleet(self, records: Mapping[tuple[str, str], dict[str, Any]]) -> None:
        """(gateway, proxy id) -> record, each replacing the one it had."""
        ...

    async def list_fleet(self) -> dict[str, dict[str, dict[str, Any]]]:
        """gateway -> proxy id -> record."""
        ...

    async def list_rollouts(self) -> dict[str, tuple[dict[str, Any], str]]:
        """gateway -> (rollout record, its revision: what ``put_rollout`` compares)."""
        ...

    async def put_rollout(self, gateway: str, record: dict[str, Any] | None,
                          expected: str | None) -> bool:
        """Replace (None: delete) the Gateway's rollout record if its revision is still
        ``expected`` (``ABSENT``: there is none; None: whatever it is); False when it
        changed meanwhile (another replica wrote it), nothing written then."""
        ...

    async def put_stable_ir(self, gateway: str, version: str, text: str) -> None:
        """The IR text of the Gateway's stable version (replacing the one kept before)."""
        ...

    async def get_stable_ir(self, gateway: str) -> tuple[str, str] | None:
        """(version, IR text) kept by ``put_stable_ir``, or None."""
        ...

    def changes(self) -> AsyncIterator[None]:
        """Yields once as soon as it watches (what was written before it started may be
        newer than the caller's last listing: list again), then once per change."""
        ...

    async def close(self) -> None: ...


def store_location(url: str) -> str:
    """``url`` as the log shows it: an SQLite store with its file's absolute path, since
    ``sqlite:///tmp/x.db`` is ``tmp/x.db`` in the working folder, not ``/tmp/x.db``."""
    if url.startswith("sqlite:///"):
        return f"{url} (file {os.path.abspath(url.removeprefix('sqlite:///'))})"
    return url


async def open_store(url: str) -> Store:
    """``sqlite:///PATH`` (embedded, default; ``sqlite:////abs/path`` for an absolute PATH)
    or ``etcd://HOST:PORT``."""
    if url.startswith("sqlite:///"):
        from propylon.controlplane.sqlite_store import SqliteStore

        return await SqliteStore.open(url.removeprefix("sqlite:///"))
    if url.startswith(("etcd://", "etcds://")):
        from propylon.controlplane.etcd_store import EtcdStore

        return await EtcdStore.open(url)
    raise ValueError(f"unknown store {url!r}: expected sqlite:///PATH or etcd://HOST:PORT")
