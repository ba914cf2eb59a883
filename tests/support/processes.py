"""Processes a test did not start itself but must stop: a gateway's successor after a binary
upgrade (SIGUSR2), found by the line it logs, stopped by its PID."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from tests.support.net import poll_until

SUCCESSOR_SERVES = re.compile(r"binary upgrade: pid (\d+) serves")


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    try:
        poll_until(lambda: not pid_alive(pid), timeout, interval=0.05, message=f"{pid} exited")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
