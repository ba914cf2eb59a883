"""Ports and polling: the only ways the integration tests wait for anything."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_ALLOCATED: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nobody listens on now and that this run has not handed out yet."""
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
