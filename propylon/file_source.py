"""Standalone mode's wiring: the files a supervisor serves, and keeping it serving what they
say. ``FileSource`` builds snapshots from the files (``propylon.standalone``), installs them
on the supervisor, and watches the configuration paths and the secret files the serving
configuration read: a change rebuilds and installs. A reload that would make a secret
unusable which the serving configuration could use (a deleted, unreadable or empty file) is
refused, so the old configuration keeps serving.

The supervisor knows only snapshots: ``propylon.proxy`` imports neither ``config`` nor
``translate``; this module is where files meet it (``propylon run`` and ``sidecar``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from propylon.config.files import may_change_texts
from propylon.config.loader import texts_changed
from propylon.ir import SnapshotIR
from propylon.proxy.supervisor import ConfigRefused, Supervisor
from propylon.standalone import (
    BuildResult,
    changed_secret_files,
    secret_failures,
    secret_stamps,
    secret_watch_dirs,
)
from propylon.translate.consumers import FileStamp, file_stamp

if TYPE_CHECKING:
    from watchfiles import Change

log = logging.getLogger("propylon")

# The file watch says it runs (an empty set of changes) once this long (ms) has passed without
# a change: the configuration is then built again if its files (or the secret files it read)
# are no longer what the build read before the watch began (a file written meanwhile would
# wait for the next change).
WATCH_READY_MS = 500

# Reloads are built at this niceness (Linux gives each thread its own): the workers, at the
# process's own priority, get the cores first; the supervisor's loop thread is unaffected.
BUILD_NICENESS = 10


class _ConfigChanges:
    """The changes under the configuration paths that may change what is read from them
    (``may_change_texts``), among those watchfiles' default filter passes (editors' swap
    files, version control folders): a log written next to the files reloads nothing."""

    def __init__(self, paths: Sequence[str]) -> None:
        from watchfiles import DefaultFilter

        self._default = DefaultFilter()
        self._paths = paths

    def __call__(self, change: Change, path: str) -> bool:
        return self._default(change, path) and may_change_texts(path, self._paths)


class _KeptBack(Exception):
    """Files of a reload read as they last loaded (``BuildResult.kept_back``)."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))


def _lower_thread_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BUILD_NICENESS)


@dataclass
class FileSource:
    """Builds configurations with ``build`` and installs them on a supervisor: at ``start``,
    on ``reload`` (SIGHUP), and from ``watch`` when the ``paths`` or the secret files the
    serving configuration read change (no ``paths``: nothing is watched)."""

    build: Callable[[], BuildResult]
    paths: Sequence[str] = ()
    # the build at start-up, told to call its first argument once the files are read, and
    # its second with a first part of a large configuration (``Supervisor.prepare``)
    first_build: Callable[[Callable[[], None], Callable[[SnapshotIR], None]],
                          BuildResult] | None = None
    # the secret files the last translated build read, with their identity as read
    secret_stamps: dict[str, FileStamp | None] = field(default_factory=dict)
    # (resource, reference) -> message: secrets the serving configuration could not use
    serving_secret_failures: dict[tuple[str, str], str] = field(default_factory=dict)
    # set when that set of files changes, so the watcher follows it
    secrets_moved: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _builder: concurrent.futures.ThreadPoolExecutor | None = field(
        default=None, init=False, repr=False)

    async def start(self, supervisor: Supervisor) -> None:
        """Start the workers and build from the files meanwhile (a worker process takes a
        fraction of a second of a core to import what it runs, a large configuration
        seconds to build); install the build (``ConfigRefused`` on failure, the workers are
        then drained). With ``first_build``, the files are parsed on every core first and
        the workers started once they are read, so their imports overlap translation
        rather than the parse (10,000 Routes: 0.2 s sooner to the first answer on 2 cores);
        of a large configuration, the workers compile a first part while the rest is
        translated (``build_snapshot``'s ``preview``), and the install is a delta against it."""
        if self.first_build is not None:
            result = self.first_build(supervisor.start_workers, supervisor.prepare)
        else:
            supervisor.start_workers()
            result = self.build()
        self._note_secrets(result)
        if result.snapshot is None:
            raise _refused(result)
        await supervisor.install_first(result.snapshot, result.warnings)
        self.serving_secret_failures = secret_failures(result.secrets or ())

    async def reload(self, supervisor: Supervisor) -> bool:
        """Build from the files again and install; False (old version serving) if refused."""
        async with self._reload_lock:
            return await self._reload(supervisor)

    async def reload_if_secrets_changed(self, supervisor: Supervisor) -> bool | None:
        """Reload if a watched secret file is no longer the file that was read; None if none
        changed (checked under the reload lock, so a reload just done is not repeated)."""
        async with self._reload_lock:
            changed = changed_secret_files(self.secret_stamps)
            if not changed:
                return None
            log.info("secret file(s) changed, reloading: %s", ", ".join(changed))
            return await self._reload(supervisor)

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

    async def _reload(self, supervisor: Supervisor) -> bool:
        result = await self._build_niced()
        self._note_secrets(result)
        failures = secret_failures(result.secrets or ())
        serving = supervisor.snapshot
        try:
            if result.snapshot is None:
                raise _refused(result)
            new = [m for k, m in failures.items() if k not in self.serving_secret_failures]
            if new and serving is not None:
                raise ConfigRefused("a secret cannot be used:\n" + "\n".join(sorted(new)))
            if serving is not None and result.snapshot.version == serving.version:
                self.serving_secret_failures = failures
                if result.kept_back:
                    supervisor.count_reload(_KeptBack(result.kept_back), served=True)
                return True
            await supervisor.install(result.snapshot, result.warnings)
        except ConfigRefused as exc:
            supervisor.count_reload(exc)
            return False
        self.serving_secret_failures = failures
        # files served as they last loaded: the reload did not do what the files say
        supervisor.count_reload(_KeptBack(result.kept_back) if result.kept_back else None,
                                served=True)
        return True

    async def _build_niced(self) -> BuildResult:
        """``build`` on a thread of lower priority: while the workers serve, translating a
        large configuration must not take a core from them (``BUILD_NICENESS``)."""
        if self._builder is None:
            self._builder = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="propylon-build", initializer=_lower_thread_priority)
        return await asyncio.get_running_loop().run_in_executor(self._builder, self.build)

    # -- watching --------------------------------------------------------------------------
    async def watch(self, supervisor: Supervisor) -> None:
        """Reload on a change of the configuration paths or of a secret file they read."""
        if not self.paths:
            return
        tasks = [asyncio.ensure_future(self._watch_config(supervisor)),
                 asyncio.ensure_future(self._watch_secrets(supervisor))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _watch_config(self, supervisor: Supervisor) -> None:
        from watchfiles import awatch

        # watchfiles says "N changes detected" of every change it passes on: ours says which
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        watching = False
        async for changes in awatch(*self.paths, watch_filter=_ConfigChanges(self.paths),
                                    debounce=200, step=50, rust_timeout=WATCH_READY_MS,
                                    yield_on_timeout=True):
            if not changes:  # the watch runs: what changed before it started is not missed
                if not watching:
                    watching = True
                    if await asyncio.get_running_loop().run_in_executor(
                            None, texts_changed, self.paths):
                        await self.reload(supervisor)
                continue
            watching = True
            names = sorted({path for _, path in changes})
            log.info("configuration changed (%s%s), reloading", ", ".join(names[:3]),
                     f" and {len(names) - 3} more" if len(names) > 3 else "")
            await self.reload(supervisor)

    async def _watch_secrets(self, supervisor: Supervisor) -> None:
        """Watch the folders of the current secret files (not recursively: a file replaced by
        a rename or a symlink swap shows up in its folder, not on the file), reload when one
        of the files is no longer what was read, and follow the set as reloads change it."""
        from watchfiles import awatch

        while not supervisor.stopping:
            self.secrets_moved.clear()
            dirs = self.secret_dirs()
            try:
                # a change between the build's read and the watch's start is not missed:
                # looked for now, and again once the watch says it runs
                await self.reload_if_secrets_changed(supervisor)
                if not dirs:
                    await self.secrets_moved.wait()
                    continue
                watching = False
                async for changes in awatch(
                    *dirs, recursive=False, watch_filter=None, debounce=200, step=50,
                    stop_event=self.secrets_moved, rust_timeout=WATCH_READY_MS,
                    yield_on_timeout=True,
                ):
                    if not changes and watching:
                        continue
                    watching = True
                    await self.reload_if_secrets_changed(supervisor)
                    if self.secret_dirs() != dirs:  # a folder appeared, went or moved
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. a folder removed just before the watch started
                log.warning("cannot watch secret files in %s: %s; retrying", ", ".join(dirs),
                            exc)
                await asyncio.sleep(1.0)


def _refused(result: BuildResult) -> ConfigRefused:
    """Why ``result`` cannot be served: its errors, after the resources it found invalid
    (the only Gateway failing validation leaves no Gateway to serve: the cause is there)."""
    return ConfigRefused("\n".join([*result.warnings, *result.errors]))
