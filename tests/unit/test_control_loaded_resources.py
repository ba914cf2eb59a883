"""The control plane validates a stored resource once per version (``state._LoadedResources``):
after each listing, what it gives is what validating every listed resource gives, and an
unchanged resource stays the same object."""

from __future__ import annotations

from propylon.controlplane.resources import StoredResource, load_stored
from propylon.controlplane.state import _LoadedResources
from tests.integration.controlplane.helpers import route, upstream


def _item(data: dict, version: str) -> StoredResource:
    meta = data["metadata"]
    return StoredResource(data["kind"], meta["namespace"], meta["name"], data, version)


def test_loaded_resources_follow_the_listing() -> None:
    items = [_item(route(f"r{i}", "shop", f"/r{i}", "svc"), "1") for i in range(6)]
    items.insert(0, _item(upstream("svc", "shop", 9000), "1"))
    broken = _item({**route("bad", "shop", "/bad", "svc"), "spec": {"nope": 1}}, "2")
    listings = [
        items,
        items,  # unchanged: the same objects
        [*items[:3], _item(route("r2", "shop", "/moved", "svc"), "3"), *items[4:]],  # updated
        [*items[:3], broken, *items[3:]],  # inserted, not valid
        [*items[:2], *items[4:]],  # deleted from the middle
        [*items[1:], _item(route("z", "shop", "/z", "svc"), "4")],  # first gone, one added
        [_item(dict(i.data), i.version) for i in items],  # every object new, same data
        [],
    ]
    loaded = _LoadedResources()
    last: dict[tuple[str, str], object] = {}
    for listing in listings:
        got = loaded.load_all(listing)
        fresh = [load_stored(item) for item in listing]
        assert got == fresh
        for item, resource in zip(listing, got, strict=True):
            before = last.get((item.kind, item.key))
            if before is not None and resource is not None and before == resource:
                assert resource is before  # validated once, kept
        last = {(i.kind, i.key): r for i, r in zip(listing, got, strict=True)}
    assert loaded.by_key == {}
