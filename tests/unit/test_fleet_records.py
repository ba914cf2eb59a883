"""Fleet records are written behind the polls and reports that change them
(``controlplane/fleet_records.py``): the records changed within the delay in one store write,
each with its latest fields, read with what is not written yet; a failed write is tried again
with the next one; ``flush`` writes what waits."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from propylon.controlplane.fleet_records import FleetRecords
from propylon.controlplane.sqlite_store import SqliteStore


class CountingStore(SqliteStore):
    """The real SQLite store, counting its fleet writes; the first ``failures`` fail."""

    writes: list[int]
    failures = 0

    async def put_fleet(self, records: Mapping[tuple[str, str], dict[str, Any]]) -> None:
        self.writes.append(len(records))
        if self.failures:
            self.failures -= 1
            raise OSError("disk away")
        await super().put_fleet(records)


async def _store(tmp_path: Path) -> CountingStore:
    plain = await SqliteStore.open(str(tmp_path / "store.db"))
    store = CountingStore(plain._db)
    store.writes = []
    return store


def test_fifty_proxies_polling_and_reporting_are_one_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await _store(tmp_path)
        records = FleetRecords(store, "replica-1", flush_after=0.05)
        try:
            for n in range(50):
                records.note("infra/edge", f"proxy{n}", {"version": "a"})
            for n in range(50):
                records.note("infra/edge", f"proxy{n}", {"state": "ACK", "version": "b"})
            await asyncio.sleep(0.2)
            assert store.writes == [50]
            fleet = (await store.list_fleet())["infra/edge"]
            assert len(fleet) == 50
            assert fleet["proxy7"]["version"] == "b" and fleet["proxy7"]["state"] == "ACK"
            assert fleet["proxy7"]["replica"] == "replica-1" and fleet["proxy7"]["lastSeen"] > 0
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_failed_write_is_tried_again_and_flush_writes_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await _store(tmp_path)
        store.failures = 1
        records = FleetRecords(store, "replica-1", flush_after=0.05)
        try:
            records.note("infra/edge", "p1", {"version": "a"})
            assert (await records.read())["infra/edge"]["p1"]["version"] == "a"  # not written
            await asyncio.sleep(0.2)
            assert store.writes == [1] and await store.list_fleet() == {}
            assert set((await records.read())["infra/edge"]) == {"p1"}
            records.note("infra/edge", "p2", {"version": "a"})
            await records.flush()  # at once, without waiting for the delay
            assert store.writes == [1, 2]
            assert set((await store.list_fleet())["infra/edge"]) == {"p1", "p2"}
            await records.flush()  # nothing waits: no write
            assert store.writes == [1, 2]
            await asyncio.sleep(0.1)  # the timer of the second note finds nothing to write
            assert store.writes == [1, 2]
        finally:
            await store.close()

    asyncio.run(scenario())
