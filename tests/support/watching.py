"""Running a ``FileSource`` watch in a test until what it should do is done."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from propylon.proxy.supervisor import Supervisor


async def watch_until(supervisor: Supervisor, watch: Awaitable[None],
                      reached: Callable[[], bool], message: str, timeout: float) -> None:
    """Run ``watch`` until ``reached()`` holds (failing with ``message`` if it does not
    within ``timeout`` seconds), then stop it, and the supervisor's health checks and
    listener sockets (a supervisor without workers: nothing else runs)."""
    task = asyncio.ensure_future(watch)
    try:
        deadline = time.monotonic() + timeout
        while not reached():
            assert time.monotonic() < deadline, message
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if supervisor.health is not None:
            supervisor.health.stop()
        supervisor.sockets.close()
