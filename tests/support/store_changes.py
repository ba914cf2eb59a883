"""The ``Store.changes()`` contract, checked on a real store (SQLite or etcd)."""

from __future__ import annotations

import asyncio

from propylon.controlplane.store import Store


async def check_a_write_before_the_watch_is_seen(store: Store, wait: float) -> None:
    """A resource put after the caller's listing but before ``changes()`` watches is seen
    (it yields once as it starts watching), then one yield per change."""
    assert await store.list_resources() == []  # the caller's listing
    changes = store.changes().__aiter__()
    await store.put("Route", "shop", "r1", {"spec": {}}, None)  # before it watches
    await asyncio.wait_for(changes.__anext__(), wait)
    assert [r.name for r in await store.list_resources()] == ["r1"]
    waiting = asyncio.ensure_future(changes.__anext__())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await store.put("Route", "shop", "r2", {"spec": {}}, None)
    await asyncio.wait_for(waiting, wait)
    await changes.aclose()  # type: ignore[attr-defined]
