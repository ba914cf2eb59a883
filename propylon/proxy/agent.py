"""The proxy's side of distribution (``propylon proxy``): poll, install, report, cache.

``start`` brings the workers up and installs the cached IR if there is one, so a proxy
restarted while the control plane is away serves its last good configuration. ``run`` then
long-polls ``/v1/gateways/{ns}/{name}/ir?after=VERSION`` forever: a new snapshot is checked
(its Gateway and content hash), installed with ``Supervisor.install``, reported as ACK or
NACK (a NACKed version is tried again after the backoff), and cached once reported
(``ir_cache.LatestSave``). Polls and reports share kept-alive connections. A failed poll never
stops serving; it is retried after a backoff with jitter (0.2 s doubling to 5 s).

Deltas: the poll says the proxy applies them (``delta=SCHEMA``, its own IR schema) and which
version it runs; the control plane may answer with what changed since that version
(``x-propylon-delta-base`` names it, ``ir/delta.py`` is the form). The proxy rebuilds the
snapshot on the objects it serves, seals it again and installs it only when that hash is the
version the control plane named (its workers are sent the delta as it came); a delta it
cannot apply, or one that rebuilds anything else, is dropped and the next poll asks for the
full snapshot (no ``delta``), so a delta can delay a change but never install a configuration
the control plane did not send.
``report_health`` sends endpoint health and the requests and 5xx answers served under each IR
version (what a progressive rollout judges) every ``health_interval`` seconds.

This is data-plane code: it speaks the distribution protocol over HTTP
(``propylon.net.httpclient``) and imports nothing of the control plane.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from propylon import ir
from propylon.ir import schema
from propylon.ir.delta import loads_delta
from propylon.ir.schema import SchemaError
from propylon.net import httpclient
from propylon.observability.metrics import merge_endpoints, merge_upstreams
from propylon.proxy.ir_cache import IRCache, LatestSave
from propylon.proxy.supervisor import ConfigRefused, Supervisor
from propylon.runtime.gc_pause import gc_paused

log = logging.getLogger("propylon.controlplane")

POLL_WAIT = 30.0
DELTA_BASE_HEADER = b"x-propylon-delta-base"  # on an answer that is a delta: its base version
MAX_IR_BYTES = 256 * 1024 * 1024  # a full snapshot is ~460 bytes per route


@dataclass
class Backoff:
    """Exponential backoff with full jitter: each delay is uniform in [0, min(cap, base*2^n)]."""

    base: float = 0.2
    cap: float = 5.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 4, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def default_proxy_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def check_snapshot(snapshot: ir.SnapshotIR, gateway: str) -> None:
    """Refuse a snapshot that is not this Gateway's (its hash was checked when it was
    decoded, over the form it came in: ``ir.schema``)."""
    keys = [g.key for g in snapshot.gateways]
    if keys != [gateway]:
        raise ConfigRefused(f"snapshot is for {keys}, not for {gateway}")


HEALTH_INTERVAL = 5.0


def invalid_resources(snapshot: ir.SnapshotIR) -> list[str]:
    """The resources the control plane found invalid, with why: a connected proxy's
    warnings (``/stats``), as a standalone gateway's are its invalid resources."""
    return [f"{status.kind} {status.key}: {'; '.join(status.reasons) or status.state}"
            for status in snapshot.statuses if status.state != "Accepted"]


def health_summary(merged: dict[str, Any]) -> dict[str, Any]:
    """What ``propylon status`` shows of a proxy's upstreams: endpoint verdicts and ejections,
    upstreams in panic mode, and retries."""
    return {
        "endpoints": [
            {k: ep[k] for k in ("upstream", "endpoint", "healthy", "ejected_in_workers",
                                "ejections")}
            for ep in merged.get("endpoints", [])
        ],
        "panic": list(merged.get("panic", [])),
        "retries": {
            upstream["key"][-1]: upstream["counters"]["retries"]
            for upstream in merged.get("upstreams", [])
            if upstream["counters"].get("retries")
        },
    }


@dataclass
class VersionTraffic:
    """Requests and 5xx answers per IR version since this proxy started. The workers' counters
    are cumulative over reloads; what they grew by between two tallies is given to the version
    that ran in between, so a tally is taken at each install (the totals the workers had when
    they took it). Nothing is added to the request path. A worker replaced after a crash
    restarts its counters: a total that went down counts as no growth."""

    keep: int = 8  # versions remembered (the oldest are dropped)
    counts: dict[str, list[int]] = field(default_factory=dict)  # version -> [requests, 5xx]
    last: tuple[int, int] | None = None

    def tally(self, version: str | None, totals: tuple[int, int]) -> None:
        if self.last is not None and version:
            grown = [max(now - before, 0) for now, before in zip(totals, self.last, strict=True)]
            slot = self.counts.pop(version, [0, 0])  # re-inserted: most recent last
            self.counts[version] = [slot[0] + grown[0], slot[1] + grown[1]]
            while len(self.counts) > self.keep:
                del self.counts[next(iter(self.counts))]
        self.last = totals

    def to_json(self) -> dict[str, dict[str, int]]:
        return {v: {"requests": r, "errors5xx": e} for v, (r, e) in self.counts.items()}


@dataclass
class Agent:
    control: str  # base URL of the control plane
    gateway: str  # "namespace/name"
    token: str
    cache: IRCache
    proxy_id: str = field(default_factory=default_proxy_id)
    ssl_context: ssl.SSLContext | None = None
    wait: float = POLL_WAIT
    health_interval: float = HEALTH_INTERVAL
    seen: str = ""  # the last version installed from the control plane
    traffic: VersionTraffic = field(default_factory=VersionTraffic)
    deltas: bool = True  # ask for deltas (turned off for one poll after a delta failed)
    saves: LatestSave = field(init=False, repr=False)
    _http: httpclient.HttpClient | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.saves = LatestSave(self.cache)

    def _client(self) -> httpclient.HttpClient:
        """Kept-alive connections to the control plane: the long-poll's (taken again as soon
        as it answers) and the reports' (connecting for each cost the control plane and every
        proxy of a fleet two connections per change)."""
        if self._http is None:
            parts = urlsplit(self.control)
            self._http = httpclient.HttpClient(f"{parts.scheme}://{parts.netloc}", 4,
                                               self.ssl_context, max_body=MAX_IR_BYTES)
        return self._http

    def close(self) -> None:
        """Close the idle connections to the control plane."""
        if self._http is not None:
            self._http.close()

    async def _request(self, method: bytes, url: str, timeout: float, body: bytes = b"",
                       headers: Sequence[tuple[bytes, bytes]] = ()) -> httpclient.Response:
        parts = urlsplit(url)
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        token = f"Bearer {self.token}".encode("latin-1")
        try:
            return await self._client().request(
                method, target.encode(), [(b"authorization", token), *headers], timeout, body)
        except httpclient.HttpError as exc:
            raise httpclient.HttpError(f"{method.decode()} {url}: {exc}") from None

    async def start(self, supervisor: Supervisor) -> None:
        supervisor.start_workers()
        supervisor.before_upgrade.append(self.saves.now)  # the successor starts from the cache
        snapshot = await asyncio.to_thread(self.cache.load)
        if snapshot is None:
            log.info("no cached IR for %s; waiting for the control plane", self.gateway)
            return
        try:
            check_snapshot(snapshot, self.gateway)
            await supervisor.install(snapshot)
            log.info("serving cached IR %s", snapshot.version)
        except ConfigRefused as exc:
            log.error("cached IR refused: %s", exc)

    async def report_health(self, supervisor: Supervisor) -> None:
        """Every ``health_interval``: the proxy's endpoint health for ``propylon status`` and
        its traffic per IR version."""
        while True:
            await asyncio.sleep(self.health_interval)
            snapshot = supervisor.snapshot
            workers = await self._tally(supervisor)
            if snapshot is None or workers is None:
                continue
            try:
                merged = {"endpoints": merge_endpoints(workers), "upstreams":
                          merge_upstreams(workers), "panic": sorted(
                              {key for stats in workers for key in stats.get("panic", ())})}
                health = {**health_summary(merged), "traffic": self.traffic.to_json()}
            except (KeyError, TypeError, ValueError) as exc:  # a stats shape it does not know
                log.warning("health report skipped: %r", exc)
                continue
            await self.report(snapshot.version, "HEALTH", health=health)

    async def _tally(self, supervisor: Supervisor) -> list[dict[str, Any]] | None:
        """The workers' health (``Worker.health``: not every route's counters, which a
        report does not need and which cost as much as an install at 1,000 routes, on every
        proxy at once), after giving their requests' growth to the running version."""
        version = supervisor.snapshot.version if supervisor.snapshot else None
        try:
            workers = await supervisor.worker_health()
        except Exception as exc:  # stats are best effort; serving goes on
            log.debug("no worker stats: %s", exc)
            return None
        totals = [stats["totals"] for stats in workers]
        self.traffic.tally(version, (sum(t[0] for t in totals), sum(t[1] for t in totals)))
        return workers

    async def run(self, supervisor: Supervisor) -> None:
        backoff = Backoff()
        try:
            while True:
                delay = await self.poll_once(supervisor)
                if delay is None:
                    backoff.reset()
                    continue
                await asyncio.sleep(delay if delay > 0 else backoff.next_delay())
        finally:  # cancelled on shutdown: what waits to be cached is written first
            self.saves.now()
            self.close()

    async def poll_once(self, supervisor: Supervisor) -> float | None:
        """One long-poll; None to poll again at once, else seconds to wait (0: backoff)."""
        running = supervisor.snapshot.version if supervisor.snapshot else ""
        fields = {"after": self.seen or running, "wait": self.wait, "proxy": self.proxy_id,
                  "version": running, "schemas": ",".join(map(str, schema.CURRENT.supported()))}
        if self.deltas and running:
            fields["delta"] = schema.CURRENT.native
            fields["runs"] = 1  # it reads runs of indices (ir/delta.py)
        self.deltas = True
        query = urlencode(fields)
        url = f"{self.control}/v1/gateways/{quote(self.gateway)}/ir?{query}"
        try:
            answer = await self._get_ir(url)
        except httpclient.HttpError as exc:
            log.warning("control plane unreachable (%s); still serving %s", exc, running or
                        "nothing")
            return 0
        if answer.status == 304:
            return None
        if answer.status != 200:
            log.warning("control plane answered %d: %s", answer.status, answer.body[:200])
            return 0
        base = answer.header(DELTA_BASE_HEADER)
        if base is not None:
            return await self._apply_delta(supervisor, answer, base.decode(errors="replace"))
        version = (answer.header(b"x-propylon-version") or b"").decode(errors="replace")
        if answer.header(schema.SCHEMA_HEADER.encode()) == str(ir.IR_SCHEMA_VERSION).encode():
            # the workers decode (``ir.loads``: the model's own form, which is this build's
            # schema but in a test build claiming another) and compile it while it is
            # decoded and checked here
            supervisor.prepare_text(answer.body, version)
        try:
            with gc_paused():  # 10,000 Routes: 2.1 s with the collector, 1.0 s without
                snapshot = schema.CURRENT.decode(answer.body)
        except SchemaError as exc:  # readable JSON this proxy must not serve: say why
            supervisor.forget_prepared_text()
            supervisor.count_reload(exc, f"IR {version}")
            await self.report(version, "NACK", str(exc))
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            supervisor.forget_prepared_text()
            log.error("undecodable IR from the control plane: %s", exc)
            return 0
        # decoding hashed every rule and status (``Schemas.decode``): the next delta's seal
        # hashes only what the delta changed
        return None if await self.apply(supervisor, snapshot, answer.body) else 0

    async def _get_ir(self, url: str) -> httpclient.Response:
        """GET an IR answer: up to ``MAX_IR_BYTES`` (the client's default bound, 4 MiB, is
        less than a full snapshot of 10,000 routes)."""
        return await self._request(b"GET", url, self.wait + 10)

    async def _apply_delta(self, supervisor: Supervisor, answer: httpclient.Response,
                           base: str) -> float | None:
        version = (answer.header(b"x-propylon-version") or b"").decode(errors="replace")
        snapshot = self.rebuild(supervisor.snapshot, answer.body, base, version)
        if snapshot is None:
            self.deltas = False
            return None
        # its text is made when the cache is written, once changes pause (``LatestSave``)
        return None if await self.apply(supervisor, snapshot, None, (base, answer.body)) else 0

    def rebuild(self, held: ir.SnapshotIR | None, body: bytes, base: str, version: str
                ) -> ir.SnapshotIR | None:
        """The snapshot a delta against ``base`` makes of ``held``, sealed; None (and why,
        in the log) unless it is exactly ``version``."""
        if held is None or held.version != base:
            log.warning("delta against %s while serving %s; fetching the full IR", base,
                        held.version if held else "nothing")
            return None
        try:
            with gc_paused():
                rebuilt = loads_delta(body, held)
                sealed = ir.seal(dataclasses.replace(rebuilt, version=""))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            log.warning("undecodable delta to %s: %r; fetching the full IR", version, exc)
            return None
        if not version or sealed.version != version or rebuilt.version != version \
                or sealed.schema != schema.CURRENT.native:
            log.warning("delta to %s rebuilt %s; fetching the full IR", version, sealed.version)
            return None
        return sealed

    async def apply(self, supervisor: Supervisor, snapshot: ir.SnapshotIR,
                    text: str | bytes | None = None,
                    delta: tuple[str, bytes] | None = None) -> bool:
        """Install and report; False on NACK. A refused version is not remembered as seen,
        so it is fetched and tried again after the backoff (the refusal may be transient,
        a worker that died mid-install for instance). ``delta`` is (base, text) when
        ``snapshot`` was rebuilt from a delta."""
        running = supervisor.snapshot.version if supervisor.snapshot else None
        try:
            check_snapshot(snapshot, self.gateway)
            totals = await supervisor.install(snapshot, invalid_resources(snapshot),
                                              delta=delta)
        except ConfigRefused as exc:
            supervisor.count_reload(exc, f"IR {snapshot.version}")
            await self.report(snapshot.version, "NACK", str(exc))
            return False
        if totals is not None:  # what the workers served until then went to ``running``
            self.traffic.tally(running, totals)
        if snapshot.version != running:
            supervisor.count_reload(None)
        self.seen = snapshot.version
        self.saves.later(snapshot, text)  # a second later, or when the proxy stops
        await self.report(snapshot.version, "ACK")
        return True

    async def report(
        self, version: str, result: str, error: str = "", health: dict[str, Any] | None = None
    ) -> None:
        payload: dict[str, Any] = {
            "proxy": self.proxy_id, "version": version, "result": result, "error": error,
        }
        if health is not None:
            payload["health"] = health
        body = json.dumps(payload).encode()
        url = f"{self.control}/v1/gateways/{quote(self.gateway)}/reports"
        for attempt in (1, 2):  # a kept-alive connection may have been closed meanwhile
            try:
                answer = await self._request(b"POST", url, 5.0, body,
                                             [(b"content-type", b"application/json")])
            except httpclient.HttpError as exc:
                if attempt == 2 or result == "HEALTH":
                    log.warning("report %s not sent: %s", result, exc)
                    return
                continue
            if answer.status != 200:
                log.warning("report %s not recorded: HTTP %d", result, answer.status)
            return
