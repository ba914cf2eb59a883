"""What the control plane serves: the store's resources translated, sharded per Gateway.

``ControlState.run`` reads every resource, translates them (in a thread, so the loop keeps
answering), and cuts the result into one sealed snapshot per Gateway holding only that
Gateway and the statuses of what it selected. It does that again after every change the store
reports, from any replica. Long-polls wait on ``wait_for``; a new translation wakes them all,
and so does a rollout that changes which version some proxy should run (``Rollouts``: a
Gateway with ``spec.rollout`` gets a new version progressively; ``watch_rollouts`` drives them).
Rollouts are kept in the store (``save_rollouts``: each Gateway's record, and the stable
version's IR text while it is not the latest), read back before the first translation, so a
restarted control plane serves the stable version again; replicas sharing the store take
each other's end of a rollout from there.
A translation that fails keeps the previous snapshots (the last good state keeps serving).
Each shard keeps the rule and status objects of the Gateway's previous shard where they are
equal, and the last versions are kept (``ir_deltas.SnapshotHistory``), so a proxy running one
of them is sent what changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import operator
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from propylon import ir
from propylon.config import Resource
from propylon.controlplane.fleet_records import FleetRecords
from propylon.controlplane.ir_deltas import SnapshotHistory
from propylon.controlplane.metrics import ControlMetrics
from propylon.controlplane.resources import StoredResource, answer, content_hash, load_stored
from propylon.controlplane.rollout import ACTIVE, RolloutSpec
from propylon.controlplane.rollouts import Rollouts, Saved, Served, rollout_specs
from propylon.controlplane.store import ABSENT, Store
from propylon.ir import codec
from propylon.ir.delta import reuse_unchanged
from propylon.ir.jsontext import json_list, json_sorted
from propylon.runtime.gc_pause import gc_paused
from propylon.translate import translate

log = logging.getLogger("propylon.controlplane")

CONNECTED_FOR = 50.0  # seconds since a proxy's last poll during which it counts as connected


def shard(snapshot: ir.SnapshotIR, gateway: ir.GatewayIR,
          previous: ir.SnapshotIR | None = None,
          statuses: Sequence[ir.StatusIR] | None = None) -> ir.SnapshotIR:
    """The sealed snapshot one Gateway's proxies get: that Gateway and the statuses of what it
    selected, each naming that Gateway only (``own_statuses``; given as ``statuses`` when
    already picked), sharing the objects of ``previous`` (that Gateway's last shard) where
    they are equal."""
    if statuses is None:
        statuses = own_statuses(snapshot.statuses, {}).get(gateway.key, [])
    unsealed = ir.SnapshotIR(gateways=(gateway,), statuses=tuple(statuses))
    return ir.seal(reuse_unchanged(unsealed, previous))


PartTexts = dict[str, codec.PartTexts]  # gateway key -> codec.part_texts memo
_GATEWAYS: Callable[[ir.StatusIR], tuple[str, ...]] = operator.attrgetter("gateways")
# id(status) -> (status, that status as each Gateway that selected it carries it)
ShardStatuses = dict[int, tuple[ir.StatusIR, dict[str, ir.StatusIR]]]


def own_statuses(statuses: Sequence[ir.StatusIR], memo: ShardStatuses
                 ) -> dict[str, list[ir.StatusIR]]:
    """Each Gateway's statuses, in order, as its shard carries them: naming that Gateway only.
    Which other Gateways selected a Route is the control plane's to show (``/v1/status``),
    not every proxy's: with 50 Gateways selecting the same 1,000 Routes, the other 49 names
    were 70 % of each shard's text, hashed, sent and decoded at every change. ``memo`` keeps
    the objects made for the last statuses (translation gives an unchanged status as the
    same object), so an unchanged status stays the same object in the shard and out of its
    delta; it is replaced by what this call used."""
    out: dict[str, list[ir.StatusIR]] = {}
    named = list(map(_GATEWAYS, statuses))
    distinct = set(named) - {()}
    if len(distinct) <= 1 and max(map(len, named), default=0) <= 1:
        # one Gateway (or none) named, by each status alone: each is its shard's as it is
        memo.clear()
        for gateway in distinct:
            out[gateway[0]] = list(itertools.compress(statuses, named))
        return out
    used: ShardStatuses = {}
    for status in statuses:
        keys = status.gateways
        found = memo.get(id(status))
        if found is None or found[0] is not status:
            found = (status, {key: status if len(keys) == 1
                              else dataclasses.replace(status, gateways=(key,))
                              for key in keys})
        used[id(status)] = found
        owns = found[1]
        for key in keys:
            mine = out.get(key)
            if mine is None:
                mine = out[key] = []
            mine.append(owns[key])
    memo.clear()
    memo.update(used)
    return out


def shard_all(snapshot: ir.SnapshotIR, previous: dict[str, ir.SnapshotIR],
              texts: dict[str, str], parts: PartTexts | None = None,
              statuses: ShardStatuses | None = None,
              ) -> tuple[dict[str, ir.SnapshotIR], dict[str, str]]:
    """Every Gateway's shard and its text. An unchanged shard stays the previous object with
    its text; a changed one is sealed and encoded with the Gateway's own memo of texts and
    digests, ``parts`` (gone Gateways are dropped from it), so that only what changed is
    hashed and written; ``statuses`` keeps its statuses (``own_statuses``)."""
    parts = {} if parts is None else parts
    for gone in set(parts) - {g.key for g in snapshot.gateways}:
        del parts[gone]
    shards: dict[str, ir.SnapshotIR] = {}
    out: dict[str, str] = {}
    with gc_paused():
        selected = own_statuses(snapshot.statuses, {} if statuses is None else statuses)
        for gateway in snapshot.gateways:
            was = previous.get(gateway.key)
            memo = parts.get(gateway.key)
            if memo is None:
                memo = parts[gateway.key] = codec.PartTexts()
            with codec.part_texts(memo):
                sealed = shard(snapshot, gateway, was, selected.get(gateway.key, []))
                if was is not None and was.version == sealed.version:
                    shards[gateway.key], out[gateway.key] = was, texts[gateway.key]
                else:
                    shards[gateway.key], out[gateway.key] = sealed, ir.dumps(sealed)
    return shards, out


def translate_items(
    items: Sequence[StoredResource],
) -> tuple[ir.SnapshotIR, list[ir.StatusIR], dict[str, RolloutSpec]]:
    """Translate stored resources; ones that no longer validate become Invalid statuses.
    Also the Gateways' rollout settings, which the IR does not carry (proxies need not)."""
    with gc_paused():
        loaded = _LOADED.load_all(items)
        resources = [resource for resource in loaded if resource is not None]
        broken = [ir.StatusIR(item.kind, item.key, "Invalid", ("stored data does not validate",))
                  for item, resource in zip(items, loaded, strict=True) if resource is None]
        return translate(resources, sealed=False), broken, rollout_specs(resources)


class _LoadedResources:
    """The validated resource of each stored one (None: it no longer validates), for the
    listing of the last translation: a change of one resource validates that one again, not
    the whole store (resources are never modified once loaded). The store's listing keeps
    the objects of unchanged resources in place, so only the items between the ends that
    are the very objects of the last listing (``codec.same_ends``) are looked at, and those
    are looked up by key with the data they were validated from."""

    def __init__(self) -> None:
        self.items: Sequence[StoredResource] = ()
        self.loaded: list[Resource | None] = []  # beside ``items``
        self.by_key: dict[tuple[str, str], tuple[dict[str, Any], Resource | None]] = {}
        # the content hash of a resource of ``by_key``, for the API's listings (other threads)
        self.hashes: dict[tuple[str, str], tuple[Resource, str]] = {}
        self._hashes_lock = threading.Lock()

    def load_all(self, items: Sequence[StoredResource]) -> list[Resource | None]:
        start, end = codec.same_ends(items, self.items)
        old = self.items[start:len(self.items) - end]
        middle = items[start:len(items) - end]
        made = [self._load(item) for item in middle]
        for gone in {(i.kind, i.key) for i in old} - {(i.kind, i.key) for i in middle}:
            self.by_key.pop(gone, None)
            with self._hashes_lock:
                self.hashes.pop(gone, None)
        self.loaded = [*self.loaded[:start], *made, *self.loaded[len(self.loaded) - end:]]
        self.items = items
        return self.loaded

    def known_hash(self, item: StoredResource) -> str | None:
        """The content hash of the resource ``item`` validated to in the last translation's
        listing, if it was there with this data; None otherwise. Any thread may ask."""
        key = (item.kind, item.key)
        known = self._known(item)
        if known is None or known[1] is None:
            return None
        resource = known[1]
        kept = self.hashes.get(key)
        if kept is not None and kept[0] is resource:
            return kept[1]
        digest = content_hash(resource)
        with self._hashes_lock:
            if self.by_key.get(key) is known:  # not dropped meanwhile
                self.hashes[key] = (resource, digest)
        return digest

    def _known(self, item: StoredResource) -> tuple[dict[str, Any], Resource | None] | None:
        """The entry of ``item`` if it was validated from this very data (the same data
        object while the stored version is the same)."""
        known = self.by_key.get((item.kind, item.key))
        if known is not None and (known[0] is item.data or known[0] == item.data):
            return known
        return None

    def _load(self, item: StoredResource) -> Resource | None:
        known = self._known(item)
        if known is not None:
            return known[1]
        resource = load_stored(item)
        self.by_key[(item.kind, item.key)] = (item.data, resource)
        return resource


_LOADED = _LoadedResources()


def answers_text(items: Sequence[StoredResource]) -> str:
    """The JSON list (``json_sorted``) of what the API shows of ``items``
    (``resources.answer``), each validated once: from the resources the last translation
    validated where they are the same; each written before the next is made (``json_list``:
    the answers of 10,000 Routes held at once left the heap 180 MiB larger)."""
    with gc_paused():
        return json_list(items, lambda item: json_sorted(answer(item, _LOADED.known_hash(item))))


@dataclass
class ControlState:
    store: Store
    snapshots: dict[str, ir.SnapshotIR] = field(default_factory=dict)  # gateway key ->
    texts: dict[str, str] = field(default_factory=dict)  # gateway key -> ir.dumps(snapshot)
    statuses: tuple[ir.StatusIR, ...] = ()
    ready: bool = False
    metrics: ControlMetrics = field(default_factory=lambda: ControlMetrics(CONNECTED_FOR))
    rollouts: Rollouts = field(default_factory=Rollouts)
    history: SnapshotHistory = field(default_factory=SnapshotHistory)
    replica: str = ""  # this process, in the fleet records it writes
    fleet_records: FleetRecords = field(init=False)
    _parts: PartTexts = field(default_factory=dict)
    _shard_statuses: ShardStatuses = field(default_factory=dict)
    _tick: asyncio.Event = field(default_factory=asyncio.Event)
    _restoring: bool = True  # the store's rollouts are still to be read
    _written: dict[str, dict[str, Any]] = field(default_factory=dict)  # rollout records
    _kept_ir: dict[str, str] = field(default_factory=dict)  # gateway -> stable IR's version
    _saving: asyncio.Lock = field(default_factory=asyncio.Lock)
    _save_task: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        self.fleet_records = FleetRecords(self.store, self.replica)

    async def refresh(self) -> None:
        if self._restoring:
            self.rollouts.saved = await self._saved_rollouts()
        items = await self.store.list_resources()
        snapshot, broken, specs = await asyncio.to_thread(translate_items, items)
        shards, texts = await asyncio.to_thread(shard_all, snapshot, self.snapshots, self.texts,
                                                self._parts, self._shard_statuses)
        published = [(k, s.version) for k, s in shards.items()
                     if k not in self.snapshots or self.snapshots[k].version != s.version]
        self.snapshots, self.texts = shards, texts
        for key, _ in published:
            self.history.keep(key, shards[key])
        self.history.retain(shards)
        self.rollouts.update(self.latest(), specs, time.time())
        if self._restoring:  # the restored stable versions can be delta bases again
            self._restoring = False
            for key, (stable, _) in self.rollouts.stable.items():
                if stable is not shards[key]:
                    self.history.keep(key, stable)
        for key, version in published:
            self.metrics.published(key, version)
        self.metrics.retain(shards)
        self.statuses = (snapshot.statuses if not broken  # translation sorts its own
                         else tuple(sorted((*snapshot.statuses, *broken),
                                           key=lambda s: (s.kind, s.key))))
        self.ready = True
        self._wake()
        log.info("translated %d resource(s): %s", len(items),
                 ", ".join(f"{k}@{s.version}" for k, s in shards.items()) or "no Gateway")
        await self.save_rollouts()

    # -- rollouts in the store -----------------------------------------------------------
    async def _saved_rollouts(self) -> dict[str, Saved]:
        """Each Gateway's rollout record in the store, with its stable version's IR when
        that was kept (it is needed when the stable version is not the latest one)."""
        saved: dict[str, Saved] = {}
        for key, (record, _) in (await self.store.list_rollouts()).items():
            stable, kept_ir = str(record.get("stable", "")), None
            if stable and stable != record.get("candidate"):
                kept = await self.store.get_stable_ir(key)
                if kept is not None and kept[0] == stable:
                    try:
                        snapshot = await asyncio.to_thread(ir.loads, kept[1])
                    except Exception as exc:  # another build's schema, a damaged text
                        log.error("the kept IR of %s's stable version %s is unreadable: %s",
                                  key, stable, exc)
                    else:
                        if snapshot.version == stable:
                            kept_ir = (snapshot, kept[1])
                            self._kept_ir[key] = stable
            saved[key] = (record, kept_ir)
        return saved

    async def save_rollouts(self) -> None:
        """Write each Gateway's rollout record that changed here (and first the stable IR it
        needs), with a compare on the revision read just before, so a record another replica
        wrote meanwhile is not overwritten (it is looked at again at the next look); take
        the end of a rollout another replica wrote (``Rollouts.adopt``); delete the records
        of Gateways gone and the ones this replica wrote for a rollout that no longer is.
        Store errors are logged: the next look tries again."""
        async with self._saving:
            try:
                await self._save_rollouts()
            except Exception as exc:
                log.warning("rollouts not saved to the store: %s; trying again", exc)

    async def _save_rollouts(self) -> None:
        stored = await self.store.list_rollouts()
        latest, now = self.latest(), time.time()
        if any([self.rollouts.adopt(key, record, now, latest)
                for key, (record, _) in stored.items()]):
            self._log_rollouts()
            self._wake()
        records = self.rollouts.records()
        for key, (record, revision) in stored.items():
            mine = key not in self.snapshots or record.get("replica") == self.replica
            if key not in records and mine and await self.store.put_rollout(key, None, revision):
                self._written.pop(key, None)
                self._kept_ir.pop(key, None)
        for key, record in records.items():
            record["replica"] = self.replica
            found, revision = stored.get(key, (None, ABSENT))
            if self._written.get(key) == record or _ended(found, record):
                continue
            stable = self.rollouts.stable[key]
            if record["stable"] != record["candidate"] and self._kept_ir.get(key) != \
                    record["stable"]:
                await self.store.put_stable_ir(key, record["stable"], stable[1])
                self._kept_ir[key] = record["stable"]
            if await self.store.put_rollout(key, record, revision):
                self._written[key] = record

    def _unsaved(self) -> bool:
        records = self.rollouts.records()
        return set(self._written) - set(records) != set() or any(
            {**record, "replica": self.replica} != self._written.get(key)
            for key, record in records.items())

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

    def _wake(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    def latest(self) -> dict[str, Served]:
        return {key: (s, self.texts[key]) for key, s in self.snapshots.items()}

    def served(self, gateway: str, proxy: str) -> Served | None:
        """The snapshot (and its text) ``proxy`` of ``gateway`` should run."""
        snapshot = self.snapshots.get(gateway)
        if snapshot is None:
            return None
        return self.rollouts.served(gateway, proxy, (snapshot, self.texts[gateway]))

    async def wait_for(self, gateway: str, after: str, timeout: float,
                       proxy: str = "") -> Served | None:
        """What ``proxy`` should run once its version differs from ``after``; None on
        timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            served = self.served(gateway, proxy)
            if served is not None and served[0].version != after:
                return served
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._tick.wait(), remaining)
            except TimeoutError:
                return None

    async def watch_rollouts(self, period: float = 1.0) -> None:
        """Judge and widen active rollouts from the proxies' reports, forever. A rollout
        with a short interval is looked at more often (a quarter of it, at least 0.1 s)."""
        while True:
            intervals = [r.spec.interval / 4 for r in self.rollouts.active]
            await asyncio.sleep(max(min([period, *intervals]), 0.1))
            if not self.rollouts.active:
                if self._unsaved():  # a write refused or failed before
                    await self.save_rollouts()
                continue
            try:
                records = await self.fleet_records.read()
            except Exception as exc:  # judged again at the next look
                log.warning("rollouts not judged, fleet records unavailable: %s", exc)
                continue
            if self.rollouts.observe(time.time(), records, CONNECTED_FOR, self.latest()):
                self._log_rollouts()
                self._wake()
            await self.save_rollouts()  # and take what other replicas decided

    def act_on_rollout(self, gateway: str, action: str) -> dict[str, Any]:
        """The operator's ``pause``, ``resume`` or ``abort`` (RolloutRefused if it does not
        apply); the rollout as JSON."""
        rollout = self.rollouts.act(gateway, action, time.time())
        log.info("rollout of %s on %s: %s by an operator", rollout.candidate, gateway, action)
        self._wake()
        self._save_task = asyncio.ensure_future(self.save_rollouts())
        return rollout.to_json()

    def _log_rollouts(self) -> None:
        for key, rollout in self.rollouts.current.items():
            log.info("rollout of %s on %s: %s, step %d (%d%%), %d proxies given%s",
                     rollout.candidate, key, rollout.phase.value, rollout.step + 1,
                     rollout.share, len(rollout.given),
                     f": {rollout.reason}" if rollout.reason else "")

    async def fleet(self) -> list[dict[str, Any]]:
        """Every Gateway with its desired version and the proxies that reported for it.
        Proxies that name a Gateway that is not configured (a wrong ``--gateway``, or a
        Gateway deleted) are shown while connected, under that name with ``version`` null
        and a ``note`` saying so; once none is connected the entry is gone."""
        records = await self.fleet_records.read()
        now = time.time()
        fleets = []
        for key in sorted(set(self.snapshots) | set(records)):
            proxies = [{**record, "id": proxy,
                        "connected": now - float(record.get("lastSeen", 0)) < CONNECTED_FOR}
                       for proxy, record in sorted(records.get(key, {}).items())]
            entry: dict[str, Any] = {
                "gateway": key,
                "version": self.snapshots[key].version if key in self.snapshots else None,
                "rollout": self.rollouts.to_json(key),
                "proxies": proxies,
            }
            if key not in self.snapshots:
                entry["proxies"] = [p for p in proxies if p["connected"]]
                if not entry["proxies"]:
                    continue
                entry["note"] = (f"unknown Gateway: no Gateway {key} is configured; check "
                                 "the --gateway of these proxies")
            fleets.append(entry)
        return fleets


def _ended(stored: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """Whether the store already holds the end of the same rollout (another replica's
    RolledBack, Aborted or Complete), which an active record must not replace."""
    if stored is None or not isinstance(stored.get("rollout"), dict):
        return False
    theirs, mine = stored["rollout"], record["rollout"]
    return (theirs.get("candidate") == mine["candidate"] and theirs.get("stable") == mine["stable"]
            and stored.get("phase") not in {p.value for p in ACTIVE})
