"""A store decodes a resource's JSON once per version (``controlplane.resources.DecodedData``):
listings share the decoded data while the version stays, and decode again when it changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from propylon.controlplane.resources import DecodedData
from propylon.controlplane.sqlite_store import SqliteStore
from propylon.controlplane.store import BatchWrite


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
            assert got is not None and got.data == changed.data
            await store.delete("Route", "shop", "r", None)
            assert await store.list_resources() == []
        finally:
            await store.close()

    asyncio.run(scenario())


def _route(name: str, x: int = 0) -> dict:
    return {"metadata": {"name": name, "namespace": "shop"}, "spec": {"x": x}}


def test_a_sqlite_listing_reads_what_changed_and_is_what_a_fresh_read_gives(
        tmp_path: Path) -> None:
    """The full listing is kept and updated from the rows written since its revision; after
    each kind of write (by this store or another process on the same file: a second
    replica) it is exactly what a store opening the file lists, and unchanged resources
    stay the same objects."""
    path = str(tmp_path / "store.db")

    async def fresh() -> list[tuple[str, str, str, dict, str]]:
        other = await SqliteStore.open(path)
        try:
            return [(i.kind, i.namespace, i.name, i.data, i.version)
                    for i in await other.list_resources()]
        finally:
            await other.close()

    async def scenario() -> None:
        store = await SqliteStore.open(path)
        replica = await SqliteStore.open(path)
        try:
            for name in ("b", "a", "c"):
                await store.put("Route", "shop", name, _route(name), None)
            await store.put("Upstream", "shop", "u", _route("u"), None)
            first = await store.list_resources()
            assert [(i.kind, i.name) for i in first] == [
                ("Route", "a"), ("Route", "b"), ("Route", "c"), ("Upstream", "u")]
            steps = [
                lambda: store.put("Route", "shop", "b", _route("b", 2), None),  # an update
                lambda: store.delete("Route", "shop", "a", None),
                # one deleted and one added in one revision: the count stays the same
                lambda: store.write_batch([
                    BatchWrite("Route", "shop", "c", None, None),
                    BatchWrite("Route", "shop", "d", _route("d"), None)]),
                lambda: replica.put("Route", "shop", "e", _route("e"), None),
                lambda: replica.delete("Upstream", "shop", "u", None),
                lambda: replica.put("Route", "shop", "a", _route("a", 5), None),
            ]
            for step in steps:
                before = {i.name: i for i in await store.list_resources()}
                await step()
                listed = await store.list_resources()
                assert [(i.kind, i.namespace, i.name, i.data, i.version)
                        for i in listed] == await fresh()
                unchanged = [i for i in listed if i.name in before
                             and before[i.name].version == i.version]
                assert all(before[i.name] is i for i in unchanged)
            assert [i.name for i in await store.list_resources()] == ["a", "b", "d", "e"]
        finally:
            await store.close()
            await replica.close()

    asyncio.run(scenario())
