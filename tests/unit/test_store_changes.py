"""A store's ``changes()`` yields once as soon as it watches: what was written between the
caller's last listing and the watch's start is not lost. The control plane lists and
translates the store, then watches it; a resource put in between (a user applying at the
control plane's start) was never translated until the next change."""

from __future__ import annotations

import asyncio
from pathlib import Path

from propylon.controlplane.sqlite_store import SqliteStore
from tests.support.store_changes import check_a_write_before_the_watch_is_seen


def test_a_write_before_the_watch_starts_is_not_missed(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await SqliteStore.open(str(tmp_path / "store.db"))
        try:
            await check_a_write_before_the_watch_is_seen(store, wait=2.0)
        finally:
            await store.close()

    asyncio.run(scenario())
