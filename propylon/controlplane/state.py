"""What the control plane serves: the store's resources translated, sharded per Gateway.

``ControlState.run`` reads every resource, translates them (in a thread, so the loop keeps
answering), and cuts the result into one sealed snapshot per Gateway holding only that
Gateway and the statuses of what it selected. It does that again after every change the store
reports, from any replica. Long-polls wait on ``wait_for``; a new translation wakes them all.
A translation that fails keeps the previous snapshots (the last good state keeps serving).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from propylon import ir
from propylon.config import Resource
from propylon.controlplane.metrics import ControlMetrics
from propylon.controlplane.resources import StoredResource, load_stored
from propylon.controlplane.store import Store
from propylon.translate import translate

log = logging.getLogger("propylon.controlplane")

CONNECTED_FOR = 50.0  # seconds since a proxy's last poll during which it counts as connected


def shard(snapshot: ir.SnapshotIR, gateway: ir.GatewayIR) -> ir.SnapshotIR:
    """The sealed snapshot one Gateway's proxies get: that Gateway and its statuses only."""
    statuses = tuple(s for s in snapshot.statuses if gateway.key in s.gateways)
    return ir.seal(ir.SnapshotIR(gateways=(gateway,), statuses=statuses))


def translate_items(items: Sequence[StoredResource]) -> tuple[ir.SnapshotIR, list[ir.StatusIR]]:
    """Translate stored resources; ones that no longer validate become Invalid statuses."""
    resources: list[Resource] = []
    broken: list[ir.StatusIR] = []
    for item in items:
        resource = load_stored(item)
        if resource is None:
            broken.append(ir.StatusIR(item.kind, item.key, "Invalid",
                                      ("stored data does not validate",)))
        else:
            resources.append(resource)
    return translate(resources), broken


@dataclass
class ControlState:
    store: Store
    snapshots: dict[str, ir.SnapshotIR] = field(default_factory=dict)  # gateway key ->
    texts: dict[str, str] = field(default_factory=dict)  # gateway key -> ir.dumps(snapshot)
    statuses: tuple[ir.StatusIR, ...] = ()
    ready: bool = False
    metrics: ControlMetrics = field(default_factory=lambda: ControlMetrics(CONNECTED_FOR))
    _tick: asyncio.Event = field(default_factory=asyncio.Event)

    async def refresh(self) -> None:
        items = await self.store.list_resources()
        snapshot, broken = await asyncio.to_thread(translate_items, items)
        shards = {g.key: shard(snapshot, g) for g in snapshot.gateways}
        self.texts = {
            key: self.texts[key] if key in self.snapshots
            and self.snapshots[key].version == s.version else ir.dumps(s)
            for key, s in shards.items()
        }
        published = [(k, s.version) for k, s in shards.items()
                     if k not in self.snapshots or self.snapshots[k].version != s.version]
        self.snapshots = shards
        for key, version in published:
            self.metrics.published(key, version)
        self.metrics.retain(shards)
        self.statuses = tuple(sorted((*snapshot.statuses, *broken),
                                     key=lambda s: (s.kind, s.key)))
        self.ready = True
        self._tick.set()
        self._tick = asyncio.Event()
        log.info("translated %d resource(s): %s", len(items),
                 ", ".join(f"{k}@{s.version}" for k, s in shards.items()) or "no Gateway")

    async def run(self) -> None:
        """Translate now and after every change, forever; store outages are retried."""
        while not self.ready:
            try:
                await self.refresh()
            except Exception as exc:
                self.metrics.translated(ok=False)
                log.error("cannot read the store: %s; retrying", exc)
                await asyncio.sleep(1.0)
        self.metrics.translated(ok=True)
        async for _ in self.store.changes():
            try:
                await self.refresh()
            except Exception as exc:
                self.metrics.translated(ok=False)
                log.error("translation skipped, previous state kept: %s", exc)
            else:
                self.metrics.translated(ok=True)

    async def wait_for(self, gateway: str, after: str, timeout: float) -> ir.SnapshotIR | None:
        """The Gateway's snapshot once its version differs from ``after``; None on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            snapshot = self.snapshots.get(gateway)
            if snapshot is not None and snapshot.version != after:
                return snapshot
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._tick.wait(), remaining)
            except TimeoutError:
                return None

    async def fleet(self) -> list[dict[str, Any]]:
        """Every Gateway with its desired version and the proxies that reported for it."""
        records = await self.store.list_fleet()
        now = time.time()
        keys = sorted(set(self.snapshots) | set(records))
        return [
            {
                "gateway": key,
                "version": self.snapshots[key].version if key in self.snapshots else None,
                "proxies": [
                    {**record, "id": proxy,
                     "connected": now - float(record.get("lastSeen", 0)) < CONNECTED_FOR}
                    for proxy, record in sorted(records.get(key, {}).items())
                ],
            }
            for key in keys
        ]
