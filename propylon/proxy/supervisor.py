"""The supervisor process of ``propylon run|sidecar|proxy``: workers, installs, admin, signals.

It checks each sealed IR (compiles it once) and hands it to every worker; if any worker
refuses it, the workers that took it get the previous one back, so all workers always serve
the same version. Dead workers are replaced and given the current version. A worker serving
the previous version is sent a delta against it (``ir/delta.py``: the rules and statuses that
changed), others the whole IR; the rules a new version leaves unchanged keep their objects, so
the check here and the workers reuse those rules' filter chains (``runtime/chain_memo.py``).

Configurations come from outside, as snapshots given to ``install``: the standalone wiring
builds them from files and watches those (``propylon.standalone.FileSource``), the agent
polls the control plane (``propylon.proxy.agent``). The supervisor reads no configuration
file, model or store.

DNS discovery runs here too, once per proxy like the active health checks
(``proxy/resolver.py``, only when an Upstream has ``dns``): an install waits (briefly) for
new names' first answers, and the workers get every answer before the configuration and
each change after it.

The supervisor owns the listening sockets (``listen_sockets.py``) and lends each worker its
slot's socket before an install needs it, so a worker's exit, a replaced worker and a binary
upgrade (SIGUSR2, ``upgrade.py``) never close a socket with connections waiting on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from propylon import ir
from propylon.filters._buckets import segment_path
from propylon.ir.delta import dumps_delta, reuse_unchanged
from propylon.proxy import upgrade
from propylon.proxy.listen_sockets import Key, ListeningSockets
from propylon.proxy.worker_entry import DELTA_REFUSED, run_worker
from propylon.proxy.worker_outbox import WorkerOutbox
from propylon.runtime.chain_memo import ChainMemo
from propylon.runtime.check_memo import ProvenRules
from propylon.runtime.gc_pause import gc_paused
from propylon.runtime.heap_trim import settle_heap

if TYPE_CHECKING:
    from propylon.proxy.health_checker import HealthChecker
    from propylon.proxy.resolver import Resolver
    from propylon.runtime.discovery import Answer, Answers, DnsQuery

log = logging.getLogger("propylon")

_ANSWER_TIMEOUT = 10.0


class ConfigRefused(Exception):
    """The configuration was not installed; the previous one keeps serving."""


class WorkerRefused(ConfigRefused):
    """A worker answered NACK: it did not install the version and serves what it served."""


@dataclass
class ReloadStats:
    succeeded: int = 0
    failed: int = 0
    last_error: str = ""
    last_failed: bool = False  # the last reload was refused


class WorkerHandle:
    """The supervisor's end of one worker: its process, pipe and outstanding questions."""

    def __init__(self, process: BaseProcess, conn: Connection, slot: int = 0) -> None:
        self.process = process
        self.conn = conn  # read here, on the loop; written by ``outbox``'s thread
        self.outbox = WorkerOutbox(conn, process.pid or 0)
        self.slot = slot  # which of each listener's sockets this worker accepts on
        self.lent: set[Key] = set()
        # Questions carry an id and answers name it: a worker handles messages concurrently,
        # so a quick answer (stats) may overtake a slow one (install).
        self.waiting: dict[int, asyncio.Future[tuple[Any, ...]]] = {}
        self.next_id = 0
        self.version = ""
        self.prepared = ""  # the version it was sent to prepare (``Supervisor.prepare``)

    def ask(self, message: tuple[Any, ...]) -> asyncio.Future[tuple[Any, ...]]:
        future: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        self.next_id += 1
        self.waiting[self.next_id] = future
        if self.outbox.broken:
            del self.waiting[self.next_id]
            future.set_exception(ConfigRefused("worker unreachable: its pipe is closed"))
        else:
            self.outbox.send((self.next_id, *message))
        return future

    def tell(self, message: tuple[Any, ...]) -> None:
        """Send without expecting an answer."""
        self.outbox.send((None, *message))

    def lend(self, sockets: ListeningSockets, keys: Iterable[Key]) -> None:
        """Pass the worker its slot's socket of each key it does not have yet: a message,
        then the descriptor right behind it (the worker reads both at once)."""
        for key in keys:
            if key in self.lent:
                continue
            sock = sockets.for_slot(key, self.slot)
            self.outbox.send((None, "listen", *key))
            self.outbox.send_handle(sock.fileno())
            self.lent.add(key)

    def forget(self, keys: Iterable[Key]) -> None:
        for key in keys:
            if key in self.lent:
                self.lent.discard(key)
                self.tell(("unlisten", *key))

    def readable(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.outbox.close()
            waiting, self.waiting = self.waiting, {}
            for pending in waiting.values():
                if not pending.done():
                    pending.set_exception(ConfigRefused("worker exited"))
            return
        answered = self.waiting.pop(message[0]) if message[0] in self.waiting else None
        if message[1] == "ack":
            # Also when the wait for it timed out: a worker handles installs in the order
            # sent, so the last version it acknowledged is the one it serves (a worker
            # replaced on a loaded machine is ready once it has caught up).
            self.version = message[2]
        if answered is not None and not answered.done():
            answered.set_result(message[1:])


class _Shipment:
    """One version as the workers are sent it, each encoding made once when first needed: a
    delta against ``base`` for the workers that serve ``base``, the whole text for others.
    ``delta`` may be given: the text the version came in as (a control plane's delta against
    ``base``), which a worker serving ``base`` rebuilds the same way."""

    def __init__(self, snapshot: ir.SnapshotIR | None, base: ir.SnapshotIR | None,
                 delta: str | bytes | None = None) -> None:
        self.snapshot, self.base = snapshot, base
        self._text: str | None = None
        self._delta = delta

    @classmethod
    def of_text(cls, text: str) -> _Shipment:
        shipment = cls(None, None)
        shipment._text = text
        return shipment

    def text(self) -> str:
        if self._text is None:
            assert self.snapshot is not None
            with gc_paused():
                self._text = ir.dumps(self.snapshot)
        return self._text

    def delta(self) -> str | bytes:
        if self._delta is None:
            assert self.snapshot is not None and self.base is not None
            with gc_paused():
                self._delta = dumps_delta(self.snapshot, self.base, runs=True)
        return self._delta


@dataclass
class Supervisor:
    """Workers plus the configuration they serve; the source of configurations is outside
    (files in standalone mode, the control plane in connected mode) and calls ``install``."""

    workers: int = 1
    access_log: str = "off"
    log_level: str = "info"
    log_format: str = "text"  # the workers' own logs: text | json
    access_log_format: str = "json"  # json | combined
    drain_timeout: float = 30.0
    handles: list[WorkerHandle] = field(default_factory=list)
    snapshot: ir.SnapshotIR | None = None
    # sent to the workers to compile before the first install (``prepare``), not served
    prepared: ir.SnapshotIR | None = None
    # the version of the text the workers were sent to prepare (``prepare_text``): a snapshot
    # of that version is installed as a delta against itself
    prepared_version: str = ""
    reloads: ReloadStats = field(default_factory=ReloadStats)
    warnings: list[str] = field(default_factory=list)
    stopping: bool = False
    health: HealthChecker | None = None
    resolver: Resolver | None = None  # DNS discovery, made when a configuration needs it
    installed_at: float = 0.0  # when the served version was installed (Unix time)
    # called before a binary upgrade starts the successor (the agent's cache written)
    before_upgrade: list[Callable[[], None]] = field(default_factory=list)
    # the filter chains ``check`` built last, kept for the rules a reload leaves unchanged
    _checked_chains: ChainMemo = field(default_factory=ChainMemo, repr=False)
    _proven_rules: ProvenRules = field(default_factory=ProvenRules, repr=False)  # check_memo.py
    # the snapshot ``check`` passed last, not checked again when installed right after
    _checked: ir.SnapshotIR | None = field(default=None, repr=False)
    sockets: ListeningSockets = field(default_factory=ListeningSockets)

    # -- workers -------------------------------------------------------------------------
    def reopen_logs(self) -> None:
        """SIGUSR1 (logrotate's postrotate): every worker reopens its access log file (told
        through its pipe, read once it is up: a worker signalled while it starts would be
        killed by the signal)."""
        for handle in self.handles:
            handle.tell(("reopen_logs",))

    def _spawn(self, slot: int) -> WorkerHandle:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=run_worker,
            args=(child, self.access_log, self.log_level, self.log_format,
                  self.access_log_format),
            daemon=True,
        )
        process.start()
        child.close()
        handle = WorkerHandle(process, parent, slot)
        asyncio.get_running_loop().add_reader(parent.fileno(), handle.readable)
        os.set_blocking(parent.fileno(), True)  # see WorkerChannel.start: recv() needs it
        return handle

    def start_workers(self) -> None:
        """Start the worker processes; they serve nothing until a snapshot is installed."""
        self.sockets.slots = max(1, self.workers)
        self.handles = [self._spawn(slot) for slot in range(self.workers)]

    def check(self, snapshot: ir.SnapshotIR) -> None:
        """Compile once here so a snapshot that cannot run never reaches a worker (the filter
        chains of rules unchanged since the last check are kept, see ``reuse_unchanged``).
        With one worker there is nothing to keep consistent: its own compilation is the
        check (a worker refuses a version whole and keeps serving its own), and a second one
        here was a third of what a change cost a connected proxy at 1,000 routes."""
        if self.workers <= 1:
            return
        # imported here: with one worker the supervisor never compiles, and the import (a
        # twentieth of a second) came before reading any file
        from propylon.runtime.compile import Services, compile_snapshot

        services = Services.scratch(asyncio.get_running_loop())
        services.chains, services.proven = self._checked_chains, self._proven_rules
        try:
            compile_snapshot(snapshot, services)
        except Exception as exc:
            raise ConfigRefused(str(exc)) from exc
        self._checked = snapshot

    async def install_first(self, snapshot: ir.SnapshotIR, warnings: Sequence[str] = ()
                            ) -> None:
        """``install`` the first configuration of a gateway that stops when it is refused
        (``run_supervisor``: its workers are drained, nothing was served before it and
        nothing is served after): the workers' own compilations are the check, made
        together on their cores, instead of this process's before them (10,000 Routes,
        two workers: 0.6-0.8 s of start-up). What every worker compiled is proven for the
        next check (``ProvenRules.prove``), as if the check had passed it."""
        if self.snapshot is not None:
            raise RuntimeError("install_first: a configuration is served already")
        self._checked = snapshot
        await self.install(snapshot, warnings)
        if self.workers > 1:
            self._proven_rules.prove(self.snapshot or snapshot)

    def prepare(self, snapshot: ir.SnapshotIR) -> None:
        """Before the first install, send the workers ``snapshot`` (a first part of it) to
        compile meanwhile, without serving it; the install is then a delta against it. A
        part after the first is sent as a delta against the one before. Sent and not waited
        for: a worker that could not prepare one refuses the deltas after it, and is sent
        the whole IR."""
        if self.snapshot is not None:
            return
        before = self.prepared
        message: tuple[str, str | bytes] = (
            ("prepare", _Shipment(snapshot, None).text()) if before is None
            else ("prepare_delta", _Shipment(snapshot, before).delta()))
        for handle in self.handles:
            handle.tell(message)
            handle.prepared = snapshot.version
        self.prepared = snapshot
        log.debug("sent the workers a first part of the configuration to compile (%d rules)",
                  sum(len(g.rules) for g in snapshot.gateways))

    def prepare_text(self, text: str | bytes, version: str) -> None:
        """``prepare`` from a text of this build's IR form claiming to be ``version`` (what a
        control plane sent), before it is decoded and checked here: the workers compile it
        meanwhile, and only an install of that version, checked, serves it."""
        if self.snapshot is not None or self.prepared is not None or not version:
            return
        for handle in self.handles:
            handle.tell(("prepare", text))
            handle.prepared = version
        self.prepared_version = version

    def forget_prepared_text(self) -> None:
        """The text given to ``prepare_text`` failed its check: no install is a delta against
        what the workers made of it (they are sent the whole of the next one)."""
        for handle in self.handles:
            if handle.prepared == self.prepared_version:
                handle.prepared = ""
        self.prepared_version = ""

    async def install(self, snapshot: ir.SnapshotIR, warnings: Sequence[str] = (),
                      delta: tuple[str, str | bytes] | None = None) -> tuple[int, int] | None:
        """Make every worker serve ``snapshot``, or raise ``ConfigRefused`` with all of them
        still serving the previous one; the requests and 5xx answers the workers had served
        when they took it (``agent.VersionTraffic``). Installing the version already served
        does nothing (and returns None). ``delta`` is (base version, text): a delta
        ``snapshot`` was rebuilt from (``ir/delta.py``), sent as it is to the workers
        serving that version instead of encoding another."""
        if self.snapshot is not None and snapshot.version == self.snapshot.version:
            return None
        rebuilt = (delta is not None and self.snapshot is not None
                   and delta[0] == self.snapshot.version)
        if not rebuilt:  # a delta's rebuild kept the served objects of unchanged rules already
            with gc_paused():  # the same content; unchanged rules become the served objects
                snapshot = reuse_unchanged(snapshot, self.snapshot)
        if snapshot is not self._checked:  # at start, the source checked it before the workers
            self.check(snapshot)
        self._checked = None
        keys = listener_keys(snapshot)
        try:
            self.sockets.ensure(keys)
        except OSError as exc:
            raise ConfigRefused(str(exc)) from exc
        await self._resolve(snapshot)
        try:
            given = delta[1] if rebuilt and delta is not None else None
            prepared = self.prepared if self.prepared is not None else (
                snapshot if snapshot.version == self.prepared_version else None)
            totals = await self._install_all(snapshot, previous=self.snapshot, delta=given,
                                             base=prepared)
        except BaseException:
            kept = listener_keys(self.snapshot) if self.snapshot else set()
            self._release(keys - kept, keep_inherited=True)
            if self.resolver is not None:
                self.resolver.retain([self.snapshot])
            raise
        self._release(set(self.sockets.by_key) - keys, keep_inherited=False)
        self.snapshot, self.prepared, self.prepared_version = snapshot, None, ""
        self.installed_at = time.time()
        self.warnings = list(warnings)
        if self.resolver is not None:
            self.resolver.retain([snapshot])
        if self.health is None:
            from propylon.proxy.health_checker import HealthChecker  # once serving

            self.health = HealthChecker(self._broadcast_health)
        self.health.update(snapshot, self._answers())
        for warning in warnings:
            log.warning("%s", warning)
        log.info("configuration %s installed on %d worker(s)", snapshot.version,
                 len(self.handles))
        return totals

    async def _install_all(
        self, snapshot: ir.SnapshotIR, previous: ir.SnapshotIR | None,
        delta: str | bytes | None = None, base: ir.SnapshotIR | None = None,
    ) -> tuple[int, int]:
        """``base``: what a delta is made against (``previous``, the served version, unless
        the workers were sent another to prepare); ``previous`` is put back on failure."""
        shipment = _Shipment(snapshot, base or previous, delta)
        keys = listener_keys(snapshot)
        answers = await asyncio.gather(
            *(self._install_one(h, shipment, keys) for h in self.handles),
            return_exceptions=True,
        )
        errors = [str(a) for a in answers if isinstance(a, BaseException)]
        if not errors:
            served = [a for a in answers if not isinstance(a, BaseException)]
            return sum(r for r, _ in served), sum(e for _, e in served)
        if previous is not None:  # put back the version every worker agreed on
            old = _Shipment(previous, None)
            old_keys = listener_keys(previous)
            # not to a worker that refused the new one: it kept serving the previous one
            # (one that did not answer in time may still take the new one: it is sent back)
            await asyncio.gather(
                *(self._install_one(h, old, old_keys)
                  for h, answer in zip(self.handles, answers, strict=True)
                  if not isinstance(answer, WorkerRefused)),
                return_exceptions=True,
            )
        raise ConfigRefused("; ".join(sorted(set(errors))))

    def _release(self, keys: set[Key], keep_inherited: bool) -> None:
        """Close the sockets of ``keys`` (after the workers' copies), except inherited ones
        no configuration has claimed yet when ``keep_inherited``."""
        if keep_inherited:
            keys = keys - self.sockets.inherited
        for handle in self.handles:
            handle.forget(keys)
        self.sockets.retain_only(set(self.sockets.by_key) - keys)

    async def _install_one(
        self, handle: WorkerHandle, shipment: _Shipment | str, keys: set[Key]
    ) -> tuple[int, int]:
        """Install on one worker; its request totals when it took it."""
        if isinstance(shipment, str):
            shipment = _Shipment.of_text(shipment)
        try:
            handle.lend(self.sockets, keys)
        except OSError as exc:
            raise ConfigRefused(f"worker unreachable: {exc}") from exc
        if self.resolver is not None and self.resolver.answers:
            # before the configuration, so that it compiles with its addresses
            handle.tell(("dns", list(self.resolver.answers.items())))
        answer: tuple[Any, ...] = ("nack", "", DELTA_REFUSED)
        base = shipment.base
        if base is not None and (handle.version or handle.prepared) == base.version:
            answer = await _answer(handle, ("install_delta", shipment.delta()))
        handle.prepared = ""
        if answer[0] != "ack" and answer[2:3] == (DELTA_REFUSED,):
            answer = await _answer(handle, ("install", shipment.text()))
        if answer[0] != "ack":
            raise WorkerRefused(answer[2] if len(answer) > 2 else "refused")
        handle.version = answer[1]
        if self.health is not None and self.health.verdicts:
            # a worker learns every verdict so far (it may be new, or restarted)
            handle.tell(("health", [(*key, ok) for key, ok in self.health.verdicts.items()]))
        return answer[2], answer[3]

    # -- DNS discovery ---------------------------------------------------------------------
    async def _resolve(self, snapshot: ir.SnapshotIR) -> None:
        """Resolve the names ``snapshot``'s Upstreams need before the workers get it."""
        if self.resolver is None:
            if not any(u.dns is not None or any(g.dns is not None for g in u.failover)
                       for gateway in snapshot.gateways for u in gateway.upstreams):
                return
            from propylon.proxy.resolver import Resolver  # dnspython loads only when used

            self.resolver = Resolver(self._broadcast_dns)
        await self.resolver.update(snapshot)

    def _answers(self) -> Answers:
        return self.resolver.answers if self.resolver is not None else {}

    def _broadcast_dns(self, query: DnsQuery, answer: Answer) -> None:
        """A name's addresses changed: every worker rebuilds the clusters that use it, the
        health checker probes the new addresses."""
        for handle in self.handles:
            handle.tell(("dns", [(query, answer)]))
        if self.health is not None and self.snapshot is not None:
            self.health.update(self.snapshot, self._answers())

    def _broadcast_health(self, upstream: str, endpoint: str, healthy: bool) -> None:
        for handle in self.handles:
            handle.tell(("health", [(upstream, endpoint, healthy)]))

    def count_reload(self, error: Exception | None, what: str = "configuration",
                     served: bool = False) -> None:
        """A source's reload (a changed file, SIGHUP, a version from the control plane):
        counted for ``/metrics`` and ``/stats``, and logged when it failed (``what`` was
        refused: "IR <version>" for a connected proxy). ``served``: what could be of it is
        served, the ``error`` said what could not (a failure all the same)."""
        self.reloads.last_failed = error is not None
        if error is None:
            self.reloads.succeeded += 1
            return
        self.reloads.failed += 1
        self.reloads.last_error = str(error)
        serving = self.snapshot.version if self.snapshot else "nothing"
        if served:
            log.error("%s refused in part, serving %s:\n%s", what, serving, error)
        else:
            log.error("%s refused, still serving %s:\n%s", what, serving, error)

    async def watch_workers(self) -> None:
        """Replace a worker that died, on the current configuration."""
        while not self.stopping:
            await asyncio.sleep(0.5)
            for i, handle in enumerate(self.handles):
                if handle.process.is_alive() or self.stopping:
                    continue
                log.error("worker %s exited with %s; starting another", handle.process.pid,
                          handle.process.exitcode)
                with contextlib.suppress(OSError, ValueError):
                    asyncio.get_running_loop().remove_reader(handle.conn.fileno())
                handle.outbox.close()
                replacement = self._spawn(handle.slot)
                self.handles[i] = replacement
                if self.snapshot is not None:
                    with contextlib.suppress(ConfigRefused):
                        await self._install_one(replacement, ir.dumps(self.snapshot),
                                                listener_keys(self.snapshot))

    async def worker_stats(self) -> list[tuple[int, int | None, dict[str, Any] | None]]:
        """(index, pid, counters) of every worker; None for one that did not answer."""
        handles = list(self.handles)
        answers = await _ask_all(handles, ("stats",))
        return [
            (index, handle.process.pid, answer[1] if answer is not None else None)
            for index, (handle, answer) in enumerate(zip(handles, answers, strict=True))
        ]

    async def worker_health(self) -> list[dict[str, Any]]:
        """What each worker that answered says of its upstreams' health (``Worker.health``)."""
        answers = await _ask_all(list(self.handles), ("health_stats",))
        return [answer[1] for answer in answers if answer is not None]

    async def stats(self) -> dict[str, Any]:
        """The workers' counters, summed."""
        from propylon.observability.metrics import merge_snapshots

        return merge_snapshots([s for _, _, s in await self.worker_stats() if s is not None])

    def ready(self) -> bool:
        version = self.snapshot.version if self.snapshot else None
        return bool(version) and all(
            h.version == version and h.process.is_alive() for h in self.handles
        )

    def kill_workers(self) -> None:
        """Kill every worker still alive, at once (one that outlived its drain, or all of
        them when this process fails: a worker ignores SIGTERM, its supervisor decides when
        it stops, so multiprocessing's exit handler would wait for it forever)."""
        for handle in self.handles:
            if handle.process.is_alive():
                handle.process.kill()

    async def drain(self) -> None:
        self.stopping = True
        if self.health is not None:
            self.health.stop()
        if self.resolver is not None:
            self.resolver.stop()
        for handle in self.handles:
            handle.tell(("drain", self.drain_timeout))
        # Closed now, not after the drain: new connections are refused at once (a successor
        # or systemd holds its own copies) instead of waiting in a backlog nobody accepts.
        self.sockets.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout + 5.0
        while any(h.process.is_alive() for h in self.handles) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.kill_workers()
        with contextlib.suppress(OSError):
            os.unlink(segment_path(os.getpid()))  # the workers' shared rate-limit table


async def _ask_all(handles: list[WorkerHandle], question: tuple[Any, ...]
                   ) -> list[tuple[Any, ...] | None]:
    """Each worker's answer to ``question``, None for one that did not answer in time."""
    answers = await asyncio.gather(
        *(asyncio.wait_for(h.ask(question), _ANSWER_TIMEOUT) for h in handles),
        return_exceptions=True,
    )
    return [answer if isinstance(answer, tuple) else None for answer in answers]


async def _answer(handle: WorkerHandle, question: tuple[Any, ...]) -> tuple[Any, ...]:
    try:
        return await asyncio.wait_for(handle.ask(question), _ANSWER_TIMEOUT)
    except TimeoutError:
        raise ConfigRefused(f"worker {handle.process.pid} did not answer in time "
                            f"({_ANSWER_TIMEOUT:g} s)") from None


def listener_keys(snapshot: ir.SnapshotIR) -> set[Key]:
    """The (address, port) of every listener ``snapshot`` serves."""
    return {(listener.address, listener.port)
            for gateway in snapshot.gateways for listener in gateway.listeners}


async def _unless_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run ``work`` to its end (its exception raised), unless ``stop`` is set first: then
    it is cancelled, and False."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        stopped.cancel()
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def run_supervisor(
    supervisor: Supervisor,
    admin: tuple[str, int] | None,
    *,
    start: Callable[[Supervisor], Awaitable[None]],
    background: Sequence[Callable[[Supervisor], Awaitable[None]]] = (),
    reload: Callable[[Supervisor], Awaitable[object]] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT, or until a successor started by SIGUSR2 serves; returns the
    process exit code.

    ``start`` brings up workers and the first configuration (``ConfigRefused`` or ``OSError``
    stops the process); ``background`` coroutines run beside it (the file watcher, the
    control-plane agent) and are cancelled on shutdown; ``reload`` runs on SIGHUP (without
    one, SIGHUP is ignored). Every signal is handled from the first moment: SIGTERM or
    SIGINT during start-up stops it (once the first build, which does not yield, returns)
    and drains the workers started so far; SIGHUP and SIGUSR2 then are acted on once
    serving. (The default actions killed this process and left the workers serving
    unmanaged until they noticed, or raised KeyboardInterrupt, after which multiprocessing
    waited forever for workers that ignore SIGTERM.)"""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, supervisor.reopen_logs)
    # a reload or an upgrade asked for during start-up is done once serving (their default
    # action would kill this process, and leave the workers started so far unmanaged)
    deferred: set[signal.Signals] = set()
    for signum in (signal.SIGHUP, signal.SIGUSR2):
        loop.add_signal_handler(signum, deferred.add, signum)
    supervisor.sockets.adopt_environment()
    predecessor = upgrade.take_ready_fd()
    try:
        admin_socket = supervisor.sockets.admin_socket(*admin) if admin else None
        if not await _unless_stopped(start(supervisor), stop):
            log.info("stopped during start-up")
            await supervisor.drain()
            return 0
    except ConfigRefused as exc:
        log.error("configuration refused:\n%s", exc)
        await supervisor.drain()
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await supervisor.drain()
        return 1
    except BaseException:
        supervisor.kill_workers()
        raise
    settle_heap()  # what the first build freed; large blocks given back from now on
    # imported once serving, where it is first used: its modules (Prometheus' client among
    # them) were a twentieth of a second of start-up before any file was read
    from propylon.admin.server import start_admin

    reloads: set[asyncio.Future[object]] = set()

    def hang_up() -> None:
        if reload is None:
            log.info("SIGHUP ignored: the configuration is not read from files here")
            return
        task = asyncio.ensure_future(reload(supervisor))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hang_up)
    upgrader = upgrade.Upgrader(supervisor.sockets, on_ready=stop.set,
                                before=supervisor.before_upgrade)
    loop.add_signal_handler(signal.SIGUSR2, upgrader.requested)
    if signal.SIGHUP in deferred:
        hang_up()
    if signal.SIGUSR2 in deferred:
        upgrader.requested()
    admin_server = (await start_admin(supervisor, *admin, sock=admin_socket)
                    if admin and admin_socket else None)
    tasks = [asyncio.ensure_future(supervisor.watch_workers())]
    tasks += [asyncio.ensure_future(job(supervisor)) for job in background]
    if predecessor is not None:
        tasks.append(asyncio.ensure_future(upgrade.tell_predecessor(predecessor,
                                                                    supervisor.ready)))
    await stop.wait()
    upgrader.cancel()
    log.info("draining (grace %.0fs)", supervisor.drain_timeout)
    if admin_server is not None:
        admin_server.close()
    for task in tasks:
        task.cancel()
    await supervisor.drain()
    return 0
