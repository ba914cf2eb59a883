"""Ports and polling: the only ways the integration tests wait for anything."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_ALLOCATED: set[int] = set()

# A pytest-xdist worker hands out ports from a block of its own below the kernel's ephemeral
# range: the kernel never gives them to a bind to port 0 or a connect() (another worker's
# server or client), and no other worker hands them out; a port taken from the kernel and
# released could be taken again by the other worker before its test binds it. Alone, a
# process takes the kernel's free ports.
_LOWEST = 10000


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _share() -> tuple[int, int] | None:
    """(this worker's index, how many) under pytest-xdist (``PYTEST_XDIST_WORKER=gwN`` among
    ``PYTEST_XDIST_WORKER_COUNT``), else None."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return (int(worker[2:]), count) if worker.startswith("gw") and count > 1 else None


def _block() -> range | None:
    share = _share()
    end = _ephemeral_start()
    if share is None or end - _LOWEST < 1000 * share[1]:
        return None
    index, count = share
    size = (end - _LOWEST) // count
    return range(_LOWEST + index * size, _LOWEST + (index + 1) * size)


_BLOCK = _block()
# a random start: two runs of the suite at once (two people's) meet less than from one place
_NEXT = random.randrange(len(_BLOCK)) if _BLOCK else 0


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _from_block(block: range, skip: set[int]) -> int | None:
    """The next port of ``block`` after the last one handed out, not in ``skip`` and free."""
    global _NEXT
    for _ in range(len(block)):
        port = block[_NEXT % len(block)]
        _NEXT += 1
        if port not in skip and _bindable(port):
            return port
    return None


def free_port() -> int:
    """A loopback TCP port nobody listens on now and that this process has not handed out yet
    (nor, under pytest-xdist, another worker: ``_share``)."""
    if _BLOCK is not None:
        port = _from_block(_BLOCK, _ALLOCATED)
        if port is None:  # every port of the block handed out: again from the oldest
            _ALLOCATED.difference_update(_BLOCK)
            port = _from_block(_BLOCK, _ALLOCATED)
        if port is None:
            raise RuntimeError(f"no free port in {_BLOCK}")
        _ALLOCATED.add(port)
        return port
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _ALLOCATED:
            _ALLOCATED.add(port)
            return port
    raise RuntimeError("no free port found in 100 tries")


class PollTimeout(AssertionError):
    pass


class StopPolling(AssertionError):
    """Raised by a polled function when waiting longer cannot help (e.g. the process died)."""


def poll_until(
    fn: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Call ``fn`` until it returns a truthy value (returned) or ``timeout`` passes.

    Exceptions raised by ``fn`` count as "not yet" (the last one is reported on timeout),
    except ``StopPolling``, which ends the wait at once."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: object = None
    while True:
        try:
            value = fn()
        except StopPolling:
            raise
        except Exception as exc:  # not yet: remember why
            last_error = exc
        else:
            if value:
                return value
            last_value = value
        if time.monotonic() >= deadline:
            detail = f"last error: {last_error!r}" if last_error else f"last value: {last_value!r}"
            raise PollTimeout(f"{message} not met within {timeout}s ({detail})")
        time.sleep(interval)


def port_refuses(port: int, host: str = "127.0.0.1") -> bool:
    """True when a TCP connect to ``port`` is refused (nobody listens)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


async def accepts_settled(turns: int = 50) -> None:
    """Wait, on a test server's loop, until asyncio has made the transports of the
    connections it accepted: close the server only then. Python 3.11 asserts in
    ``Server._attach`` when a transport is made after its server closed, and the half-made
    transport's socket is left open: collected in some later test as an "unclosed
    transport", which the warnings filter makes that test's error (start / 5 connections /
    stop, 60 times: 12-16 such sockets, none when waiting)."""
    for _ in range(turns):
        if not any(getattr(task.get_coro(), "__qualname__", "").endswith("_accept_connection2")
                   for task in asyncio.all_tasks()):
            return
        await asyncio.sleep(0)
