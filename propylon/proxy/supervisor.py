"""The supervisor process of ``propylon run``: config, workers, reloads, admin, signals.

It owns the configuration flow (load, translate, check) and hands each worker the sealed IR.
A new configuration goes to every worker; if any worker refuses it, the workers that took it
get the previous one back, so all workers always serve the same version. Dead workers are
replaced and given the current version.

In standalone mode the configuration paths are watched, and so are the secret files the
current configuration read (``BuildResult.secrets``): replacing one reloads like a config
change. A reload that would make a secret unusable which the serving configuration could use
(a deleted, unreadable or empty file) is refused, so the old configuration keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from propylon import ir
from propylon.filters._buckets import segment_path
from propylon.observability.metrics import merge_snapshots
from propylon.proxy.health_checker import HealthChecker
from propylon.proxy.worker import worker_main
from propylon.runtime.compile import Services, compile_snapshot
from propylon.standalone import (
    BuildResult,
    changed_secret_files,
    secret_failures,
    secret_stamps,
    secret_watch_dirs,
)
from propylon.translate.consumers import FileStamp, file_stamp

log = logging.getLogger("propylon")

_ANSWER_TIMEOUT = 10.0


class ConfigRefused(Exception):
    """The configuration was not installed; the previous one keeps serving."""


@dataclass
class ReloadStats:
    succeeded: int = 0
    failed: int = 0
    last_error: str = ""


class WorkerHandle:
    """The supervisor's end of one worker: its process, pipe and outstanding questions."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        # Questions carry an id and answers name it: a worker handles messages concurrently,
        # so a quick answer (stats) may overtake a slow one (install).
        self.waiting: dict[int, asyncio.Future[tuple[Any, ...]]] = {}
        self.next_id = 0
        self.version = ""

    def ask(self, message: tuple[Any, ...]) -> asyncio.Future[tuple[Any, ...]]:
        future: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        self.next_id += 1
        self.waiting[self.next_id] = future
        try:
            self.conn.send((self.next_id, *message))
        except OSError as exc:
            del self.waiting[self.next_id]
            future.set_exception(ConfigRefused(f"worker unreachable: {exc}"))
        return future

    def tell(self, message: tuple[Any, ...]) -> None:
        """Send without expecting an answer."""
        with contextlib.suppress(OSError):
            self.conn.send((None, *message))

    def readable(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            waiting, self.waiting = self.waiting, {}
            for pending in waiting.values():
                if not pending.done():
                    pending.set_exception(ConfigRefused("worker exited"))
            return
        answered = self.waiting.pop(message[0]) if message[0] in self.waiting else None
        if answered is not None and not answered.done():
            answered.set_result(message[1:])


@dataclass
class Supervisor:
    """Workers plus the configuration they serve; the source of configurations is outside.

    Standalone mode gives it ``build`` (files -> BuildResult) and calls ``reload``; connected
    mode calls ``install`` with snapshots that come from the control plane.
    """

    build: Callable[[], BuildResult] | None = None
    workers: int = 1
    access_log: str = "off"
    log_level: str = "info"
    drain_timeout: float = 30.0
    handles: list[WorkerHandle] = field(default_factory=list)
    snapshot: ir.SnapshotIR | None = None
    reloads: ReloadStats = field(default_factory=ReloadStats)
    warnings: list[str] = field(default_factory=list)
    stopping: bool = False
    health: HealthChecker | None = None
    # the secret files the last translated build read, with their identity as read
    secret_stamps: dict[str, FileStamp | None] = field(default_factory=dict)
    # (resource, reference) -> message: secrets the serving configuration could not use
    serving_secret_failures: dict[tuple[str, str], str] = field(default_factory=dict)
    # set when that set of files changes, so the watcher follows it
    secrets_moved: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    # -- workers -------------------------------------------------------------------------
    def _spawn(self) -> WorkerHandle:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=worker_main, args=(child, self.access_log, self.log_level), daemon=True
        )
        process.start()
        child.close()
        handle = WorkerHandle(process, parent)
        asyncio.get_running_loop().add_reader(parent.fileno(), handle.readable)
        os.set_blocking(parent.fileno(), True)  # see WorkerChannel.start: recv() needs it
        return handle

    def start_workers(self) -> None:
        """Start the worker processes; they serve nothing until a snapshot is installed."""
        self.handles = [self._spawn() for _ in range(self.workers)]

    async def start(self) -> None:
        """Standalone start: build from the files, start workers on it (raises on failure)."""
        assert self.build is not None
        result = self.build()
        self._note_secrets(result)
        if result.snapshot is None:
            raise ConfigRefused("\n".join(result.errors))
        self._check(result.snapshot)
        self.start_workers()
        await self.install(result.snapshot, result.warnings)
        self.serving_secret_failures = secret_failures(result.secrets or ())

    @staticmethod
    def _check(snapshot: ir.SnapshotIR) -> None:
        """Compile once here so a snapshot that cannot run never reaches a worker."""
        try:
            compile_snapshot(snapshot, Services.scratch(asyncio.get_running_loop()))
        except Exception as exc:
            raise ConfigRefused(str(exc)) from exc

    async def install(self, snapshot: ir.SnapshotIR, warnings: Sequence[str] = ()) -> None:
        """Make every worker serve ``snapshot``, or raise ``ConfigRefused`` with all of them
        still serving the previous one. Installing the version already served does nothing."""
        if self.snapshot is not None and snapshot.version == self.snapshot.version:
            return
        self._check(snapshot)
        try:
            await self._install_all(snapshot, previous=self.snapshot)
        except TimeoutError as exc:
            raise ConfigRefused("a worker did not answer in time") from exc
        self.snapshot = snapshot
        self.warnings = list(warnings)
        if self.health is None:
            self.health = HealthChecker(self._broadcast_health)
        self.health.update(snapshot)
        for warning in warnings:
            log.warning("%s", warning)
        log.info("configuration %s installed on %d worker(s)", snapshot.version,
                 len(self.handles))

    async def _install_all(
        self, snapshot: ir.SnapshotIR, previous: ir.SnapshotIR | None
    ) -> None:
        text = ir.dumps(snapshot)
        answers = await asyncio.gather(
            *(self._install_one(h, text) for h in self.handles), return_exceptions=True
        )
        errors = [str(a) for a in answers if isinstance(a, BaseException)]
        if not errors:
            return
        if previous is not None:  # put back the version every worker agreed on
            old = ir.dumps(previous)
            await asyncio.gather(
                *(self._install_one(h, old) for h in self.handles), return_exceptions=True
            )
        raise ConfigRefused("; ".join(sorted(set(errors))))

    async def _install_one(self, handle: WorkerHandle, text: str) -> None:
        answer = await asyncio.wait_for(handle.ask(("install", text)), _ANSWER_TIMEOUT)
        if answer[0] != "ack":
            raise ConfigRefused(answer[2] if len(answer) > 2 else "refused")
        handle.version = answer[1]
        if self.health is not None and self.health.verdicts:
            # a worker learns every verdict so far (it may be new, or restarted)
            handle.tell(("health", [(*key, ok) for key, ok in self.health.verdicts.items()]))

    def _broadcast_health(self, upstream: str, endpoint: str, healthy: bool) -> None:
        for handle in self.handles:
            handle.tell(("health", [(upstream, endpoint, healthy)]))

    async def reload(self) -> bool:
        """Build from the files again and install; False (old version serving) if refused."""
        async with self._reload_lock:
            return await self._reload()

    async def reload_if_secrets_changed(self) -> bool | None:
        """Reload if a watched secret file is no longer the file that was read; None if none
        changed (checked under the reload lock, so a reload just done is not repeated)."""
        async with self._reload_lock:
            changed = changed_secret_files(self.secret_stamps)
            if not changed:
                return None
            log.info("secret file(s) changed, reloading: %s", ", ".join(changed))
            return await self._reload()

    def secret_dirs(self) -> tuple[str, ...]:
        """The folders to watch for the secret files of the current configuration."""
        return secret_watch_dirs(self.secret_stamps)

    def _note_secrets(self, result: BuildResult) -> None:
        """Remember the secret files a build read: they are what the watcher follows."""
        secrets = result.secrets
        if secrets is None:  # not translated (schema errors): keep following the same files
            stamps = {path: file_stamp(path) for path in self.secret_stamps}
        else:
            stamps = secret_stamps(secrets)
        moved = set(stamps) != set(self.secret_stamps)
        self.secret_stamps = stamps
        if moved:
            self.secrets_moved.set()

    async def _reload(self) -> bool:
        assert self.build is not None
        result = self.build()
        self._note_secrets(result)
        failures = secret_failures(result.secrets or ())
        try:
            if result.snapshot is None:
                raise ConfigRefused("\n".join(result.errors))
            new = [m for k, m in failures.items() if k not in self.serving_secret_failures]
            if new and self.snapshot is not None:
                raise ConfigRefused("a secret cannot be used:\n" + "\n".join(sorted(new)))
            if self.snapshot is not None and result.snapshot.version == self.snapshot.version:
                self.serving_secret_failures = failures
                return True
            await self.install(result.snapshot, result.warnings)
        except ConfigRefused as exc:
            self.reloads.failed += 1
            self.reloads.last_error = str(exc)
            log.error("configuration refused, still serving %s:\n%s",
                      self.snapshot.version if self.snapshot else "nothing", exc)
            return False
        self.serving_secret_failures = failures
        self.reloads.succeeded += 1
        return True

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
                replacement = self._spawn()
                self.handles[i] = replacement
                if self.snapshot is not None:
                    with contextlib.suppress(ConfigRefused, TimeoutError):
                        await self._install_one(replacement, ir.dumps(self.snapshot))

    async def stats(self) -> dict[str, Any]:
        answers = await asyncio.gather(
            *(asyncio.wait_for(h.ask(("stats",)), _ANSWER_TIMEOUT) for h in self.handles),
            return_exceptions=True,
        )
        return merge_snapshots([a[1] for a in answers if isinstance(a, tuple)])

    def ready(self) -> bool:
        version = self.snapshot.version if self.snapshot else None
        return bool(version) and all(
            h.version == version and h.process.is_alive() for h in self.handles
        )

    async def drain(self) -> None:
        self.stopping = True
        if self.health is not None:
            self.health.stop()
        for handle in self.handles:
            handle.tell(("drain", self.drain_timeout))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout + 5.0
        while any(h.process.is_alive() for h in self.handles) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for handle in self.handles:
            if handle.process.is_alive():
                handle.process.kill()
        with contextlib.suppress(OSError):
            os.unlink(segment_path(os.getpid()))  # the workers' shared rate-limit table


async def run_supervisor(
    supervisor: Supervisor,
    watch_paths: Sequence[str],
    admin: tuple[str, int] | None,
    *,
    start: Callable[[Supervisor], Awaitable[None]] | None = None,
    background: Sequence[Callable[[Supervisor], Awaitable[None]]] = (),
) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code.

    ``start`` brings up workers and the first configuration (default: ``Supervisor.start``,
    from files); ``background`` coroutines run beside it (connected mode's control-plane
    client, for instance) and are cancelled on shutdown."""
    from propylon.admin.server import start_admin

    loop = asyncio.get_running_loop()
    try:
        await (start(supervisor) if start is not None else supervisor.start())
    except ConfigRefused as exc:
        log.error("configuration refused:\n%s", exc)
        await supervisor.drain()
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await supervisor.drain()
        return 1
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if supervisor.build is not None:
        loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(supervisor.reload())
        )
    admin_server = await start_admin(supervisor, *admin) if admin else None
    tasks = [asyncio.ensure_future(supervisor.watch_workers())]
    if watch_paths:
        tasks.append(asyncio.ensure_future(_watch_files(supervisor, watch_paths)))
    tasks += [asyncio.ensure_future(job(supervisor)) for job in background]
    await stop.wait()
    log.info("draining (grace %.0fs)", supervisor.drain_timeout)
    if admin_server is not None:
        admin_server.close()
    for task in tasks:
        task.cancel()
    await supervisor.drain()
    return 0


async def _watch_files(supervisor: Supervisor, paths: Sequence[str]) -> None:
    """Reload on a change of the configuration ``paths`` or of a secret file it reads."""
    tasks = [asyncio.ensure_future(_watch_config(supervisor, paths)),
             asyncio.ensure_future(_watch_secrets(supervisor))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def _watch_config(supervisor: Supervisor, paths: Sequence[str]) -> None:
    from watchfiles import awatch

    async for _changes in awatch(*paths, debounce=200, step=50):
        await supervisor.reload()


async def _watch_secrets(supervisor: Supervisor) -> None:
    """Watch the folders of the current secret files (not recursively: a file replaced by a
    rename or a symlink swap shows up in its folder, not on the file), reload when one of the
    files is no longer what was read, and follow the set as reloads change it."""
    from watchfiles import awatch

    while not supervisor.stopping:
        supervisor.secrets_moved.clear()
        dirs = supervisor.secret_dirs()
        try:
            # a change between the build's read and the watch's start is not missed
            await supervisor.reload_if_secrets_changed()
            if not dirs:
                await supervisor.secrets_moved.wait()
                continue
            async for _changes in awatch(
                *dirs, recursive=False, watch_filter=None, debounce=200, step=50,
                stop_event=supervisor.secrets_moved,
            ):
                await supervisor.reload_if_secrets_changed()
                if supervisor.secret_dirs() != dirs:  # a folder appeared, went or moved
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. a folder removed just before the watch started
            log.warning("cannot watch secret files in %s: %s; retrying", ", ".join(dirs), exc)
            await asyncio.sleep(1.0)
