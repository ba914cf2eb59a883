"""A store's ``changes()`` yields once as soon as it watches: what was written between the
caller's last listing and the watch's start is not lost. The control plane lists and
translates the store, then watches it; a resource put in between (a user applying at the
control plane's start) was never translated until the next change."""

from __future__ import annotations

import asyncio
from pathlib import Path

from propylon.controlplane.sqlite_store import SqliteStore


def test_a_write_before_the_watch_starts_is_not_missed(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await SqliteStore.open(str(tmp_path / "store.db"))
        try:
            listed = await store.list_resources()  # the caller's listing
            assert listed == []
            changes = store.changes().__aiter__()
            await store.put("Route", "shop", "r1", {"spec": {}}, None)  # before it watches
            await asyncio.wait_for(changes.__anext__(), 2.0)
            assert [r.name for r in await store.list_resources()] == ["r1"]
            # then once per change
            waiting = asyncio.ensure_future(changes.__anext__())
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await store.put("Route", "shop", "r2", {"spec": {}}, None)
            await asyncio.wait_for(waiting, 2.0)
        finally:
            await store.close()

    asyncio.run(scenario())
