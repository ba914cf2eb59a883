"""Binary upgrade on SIGUSR2 (nginx's "upgrading executable on the fly").

The running supervisor (the old one) starts the executable again with the arguments it was
started with (``sys.executable`` and ``sys.orig_argv``), passing its listening sockets by
descriptor inheritance (``listen_sockets.INHERITED_ENV`` names them) and the write end of a
pipe (``READY_FD_ENV``). The new supervisor adopts the sockets, loads its configuration, starts
its workers on the same sockets, and writes ``ready`` to the pipe once every worker serves.
Only then does the old one stop accepting and drain. If the new one exits, closes the pipe
without a word, or is not ready within ``timeout``, the old one logs why, stops it, and keeps
serving; nothing it listens on was ever closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

from propylon.proxy.listen_sockets import INHERITED_ENV, ListeningSockets

log = logging.getLogger("propylon")

READY_FD_ENV = "PROPYLON_UPGRADE_READY_FD"
READY = b"ready\n"
UPGRADE_TIMEOUT = 60.0


class UpgradeFailed(Exception):
    """The new binary did not become ready; the old one keeps serving."""


def successor_command() -> list[str]:
    """This process's command line, run by the current interpreter (``-m propylon`` and the
    console script both come back as they were typed)."""
    return [sys.executable, *sys.orig_argv[1:]]


async def start_successor(sockets: ListeningSockets, timeout: float = UPGRADE_TIMEOUT) -> int:
    """Start the new binary and wait until it serves; its pid, or ``UpgradeFailed``."""
    fds, names = sockets.for_successor()
    read_end, write_end = os.pipe()
    env = {**os.environ, INHERITED_ENV: names, READY_FD_ENV: str(write_end)}
    try:
        process = subprocess.Popen(successor_command(), env=env, pass_fds=(*fds, write_end),
                                   stdin=subprocess.DEVNULL)
    except OSError as exc:
        os.close(read_end)
        raise UpgradeFailed(f"cannot start {sys.executable}: {exc}") from exc
    finally:
        os.close(write_end)
    log.info("binary upgrade: started pid %d with %d inherited socket(s)", process.pid, len(fds))
    try:
        word = await asyncio.wait_for(asyncio.to_thread(_read_all, read_end), timeout)
    except TimeoutError:
        await _stop(process)
        raise UpgradeFailed(f"pid {process.pid} was not ready within {timeout:.0f}s; "
                            "stopped it") from None
    except asyncio.CancelledError:
        await _stop(process)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.close(read_end)
    if word != READY:
        code = await asyncio.to_thread(process.wait)
        raise UpgradeFailed(f"pid {process.pid} exited with {code} before it was ready "
                            "(its log says why)")
    return process.pid


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 64):
        chunks.append(chunk)
    return b"".join(chunks)


async def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the new supervisor drains its workers), then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(asyncio.to_thread(process.wait), 15)
    except TimeoutError:
        process.kill()
        await asyncio.to_thread(process.wait)


def take_ready_fd() -> int | None:
    """The pipe to the old binary when this process is its successor (the variable is
    removed so a later upgrade of this process starts clean)."""
    value = os.environ.pop(READY_FD_ENV, "")
    try:
        return int(value) if value else None
    except ValueError:
        log.error("ignoring %s=%r", READY_FD_ENV, value)
        return None


async def tell_predecessor(fd: int, ready: Callable[[], bool]) -> None:
    """Once ``ready()`` holds (every worker serves the configuration), say so on ``fd`` and
    close it; the old binary then drains. Until then the old one's timeout runs."""
    try:
        while not ready():
            await asyncio.sleep(0.05)
        os.write(fd, READY)
        log.info("binary upgrade: serving; the previous process drains")
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


class Upgrader:
    """SIGUSR2's handler: one upgrade at a time; ``on_ready`` (the supervisor's stop) runs
    once the successor serves, a failure is logged and changes nothing."""

    def __init__(self, sockets: ListeningSockets, on_ready: Callable[[], None],
                 timeout: float = UPGRADE_TIMEOUT,
                 before: Sequence[Callable[[], None]] = ()) -> None:
        self.sockets = sockets
        self.on_ready = on_ready
        self.before = before  # each called before the successor starts
        self.timeout = timeout
        self.task: asyncio.Future[None] | None = None

    def requested(self) -> None:
        if self.task is not None and not self.task.done():
            log.warning("binary upgrade already in progress; SIGUSR2 ignored")
            return
        self.task = asyncio.ensure_future(self._upgrade())

    async def _upgrade(self) -> None:
        for prepare in self.before:
            prepare()
        try:
            pid = await start_successor(self.sockets, self.timeout)
        except UpgradeFailed as exc:
            log.error("binary upgrade failed, still serving: %s", exc)
            return
        log.info("binary upgrade: pid %d serves; this process (%d) drains", pid, os.getpid())
        self.on_ready()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
