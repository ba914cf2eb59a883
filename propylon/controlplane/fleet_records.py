"""What each connected proxy last said (its polls and reports), written to the store behind
the requests that say it.

A proxy's record is updated in memory at once; the records changed within ``FLUSH_AFTER``
seconds are written together, in one store call. Each poll and each report of every proxy
wrote its record on its own before (a thread hop and a commit each: at 50 proxies, 100 writes
per change, most of what a change cost the control plane besides translating it). ``read``
is the store's fleet with what this replica has not written yet (``propylon status``,
rollouts); other replicas see a record that much later. ``flush`` writes what waits (at
shutdown). A failed write is logged and tried again with the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from propylon.controlplane.store import Store

log = logging.getLogger("propylon.controlplane")

FLUSH_AFTER = 0.1  # seconds


class FleetRecords:
    def __init__(self, store: Store, replica: str, flush_after: float = FLUSH_AFTER) -> None:
        self.store, self.replica, self.flush_after = store, replica, flush_after
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self._changed: set[tuple[str, str]] = set()
        self._writing: set[tuple[str, str]] = set()
        self._task: asyncio.Future[None] | None = None

    def note(self, gateway: str, proxy: str, fields: dict[str, Any]) -> None:
        record = self._records.setdefault((gateway, proxy), {})
        record.update(fields, lastSeen=time.time(), replica=self.replica)
        self._changed.add((gateway, proxy))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.flush_after)
        await self.flush()

    async def read(self) -> dict[str, dict[str, dict[str, Any]]]:
        """gateway -> proxy id -> record, as the store's ``list_fleet``, with this replica's
        records that are not written yet."""
        fleet = await self.store.list_fleet()
        for gateway, proxy in self._changed | self._writing:
            fleet.setdefault(gateway, {})[proxy] = dict(self._records[(gateway, proxy)])
        return fleet

    async def flush(self) -> None:
        if not self._changed:
            return
        keys, self._changed = self._changed, set()
        self._writing |= keys
        try:
            await self.store.put_fleet({key: dict(self._records[key]) for key in keys})
        except Exception as exc:  # the store is away: distribution goes on without records
            log.warning("cannot record %d proxies: %s", len(keys), exc)
            self._changed |= keys
        finally:
            self._writing -= keys
