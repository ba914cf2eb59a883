"""A store decodes a resource's JSON once per version (``controlplane.resources.DecodedData``):
listings share the decoded data while the version stays, and decode again when it changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from propylon.controlplane.resources import DecodedData
from propylon.controlplane.sqlite_store import SqliteStore


def test_same_version_same_object_new_version_decoded_again() -> None:
    decoded = DecodedData()
    first = decoded.item("Route", "shop", "r", "1", '{"spec": {"a": 1}}')
    again = decoded.item("Route", "shop", "r", "1", '{"spec": {"a": 1}}')
    assert again.data is first.data and again.version == "1"
    changed = decoded.item("Route", "shop", "r", "2", '{"spec": {"a": 2}}')
    assert changed.data == {"spec": {"a": 2}} and changed.data is not first.data
    other = decoded.item("Route", "shop", "s", "3", '{"spec": {}}')
    decoded.keep_only([changed])
    assert decoded.item("Route", "shop", "s", "3", '{"spec": {}}').data is not other.data


def test_a_sqlite_store_lists_the_written_data(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await SqliteStore.open(str(tmp_path / "store.db"))
        try:
            data = {"metadata": {"name": "r", "namespace": "shop"}, "spec": {"x": 1}}
            await store.put("Route", "shop", "r", data, None)
            (listed,) = await store.list_resources()
            (again,) = await store.list_resources()
            assert listed.data == data and again.data is listed.data
            await store.put("Route", "shop", "r", {**data, "spec": {"x": 2}}, listed.version)
            (changed,) = await store.list_resources()
            assert changed.data["spec"] == {"x": 2} and changed.version != listed.version
            got = await store.get("Route", "shop", "r")
            assert got is not None and got.data is changed.data
            await store.delete("Route", "shop", "r", None)
            assert await store.list_resources() == []
        finally:
            await store.close()

    asyncio.run(scenario())
