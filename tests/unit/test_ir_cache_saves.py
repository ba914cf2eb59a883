"""``LatestSave``: a proxy caches the latest installed version once changes pause (or at
the latest ``longest`` after the oldest not yet written), never an older one after a newer."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

from propylon import ir
from propylon.proxy.ir_cache import IRCache, LatestSave


@dataclass(frozen=True)
class CountingCache(IRCache):
    """The real cache, noting the versions it wrote."""

    written: list[str] = field(default_factory=list)

    def save(self, snapshot: ir.SnapshotIR, text: str | bytes | None = None) -> None:
        super().save(snapshot, text)
        self.written.append(snapshot.version)


def version(n: int) -> ir.SnapshotIR:
    return ir.SnapshotIR(gateways=(), version=f"{n:016x}")  # as a proxy holds them


def test_a_burst_of_versions_is_written_once_after_it(tmp_path: Path) -> None:
    cache = CountingCache(tmp_path, "shop/edge")
    saves = LatestSave(cache, delay=0.5, longest=5.0)
    sent = [version(n) for n in range(8)]

    async def burst() -> None:
        for snapshot in sent:
            saves.later(snapshot)
            await asyncio.sleep(0.03)  # closer together than ``delay``
        assert cache.written == []
        await asyncio.sleep(1.0)

    asyncio.run(burst())
    assert cache.written == [sent[-1].version]
    assert json.loads(cache.path.read_text())["version"] == sent[-1].version


def test_a_version_waits_no_longer_than_longest(tmp_path: Path) -> None:
    cache = CountingCache(tmp_path, "shop/edge")
    saves = LatestSave(cache, delay=0.5, longest=0.2)
    sent = [version(n) for n in range(30)]
    during: list[str] = []

    async def steady() -> None:
        for snapshot in sent:  # versions 0.02 s apart: never a pause of ``delay``
            saves.later(snapshot)
            await asyncio.sleep(0.02)
        during.extend(cache.written)
        await asyncio.sleep(1.0)

    asyncio.run(steady())
    written = cache.written
    assert during, "nothing written while versions kept coming"
    assert written[-1] == sent[-1].version
    assert len(written) - len(during) <= 1  # the last, after the pause (unless written just before)
    order = [v.version for v in sent]
    assert [order.index(v) for v in written] == sorted(order.index(v) for v in written)


def test_what_waits_is_written_at_once_when_asked(tmp_path: Path) -> None:
    cache = CountingCache(tmp_path, "shop/edge")
    saves = LatestSave(cache, delay=60.0)

    async def stop_early() -> None:
        saves.later(version(1))
        saves.now()  # a proxy stopping, or handing over to an upgraded binary

    asyncio.run(stop_early())
    assert cache.written == [version(1).version]
