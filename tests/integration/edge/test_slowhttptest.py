"""Slowloris-style attacks with Debian's ``slowhttptest`` while a normal client is served.

A slow-headers attack (``-H``) and a slow-body attack (``-B``) run at the same time against a
gateway with ``headerReadTimeout: 2s``, each bounded to 6 s (three header timeouts) and 200
connections; a normal client keeps sending requests meanwhile and must get 200 for at least
99% of them.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time

import pytest

from tests.integration.edge._helpers import forward_all, listener_gateway
from tests.support import resources as r
from tests.support.client import roundtrip

DURATION = 6  # seconds, per attack (-l): three times headerReadTimeout
ATTACKS = {
    "slow-headers": ["-H", "-c", "200", "-r", "100", "-i", "1", "-x", "24"],
    "slow-body": ["-B", "-c", "200", "-r", "100", "-i", "1", "-x", "24", "-s", "65536"],
}


def attack(port: int, mode: list[str]) -> subprocess.Popen[bytes]:
    command = ["slowhttptest", *mode, "-l", str(DURATION), "-p", "2",
               "-u", f"http://127.0.0.1:{port}/attack"]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> str:
    try:
        out, _ = process.communicate(timeout=DURATION + 20)
    except subprocess.TimeoutExpired:
        process.kill()  # by its own handle (PID), never by name
        out, _ = process.communicate(timeout=5)
    return re.sub(r"\x1b\[[0-9;]*m", "", out.decode(errors="replace"))


def final_status(out: str) -> str:
    """The last value of each of slowhttptest's status counters."""
    last: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key in ("pending", "connected", "error", "closed", "service available"):
            last[key] = value.strip()
    return ", ".join(f"{k} {v}" for k, v in last.items()) or out.strip()[-200:]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("slowhttptest") is None, reason="slowhttptest not installed")
def test_normal_clients_served_during_slow_header_and_body_attacks(gateways, upstreams) -> None:
    upstream = upstreams("victim")
    gw = gateways(lambda port: r.dump(
        listener_gateway(port, limits={"headerReadTimeout": "2s"}),
        *forward_all("victim", upstream.port)))
    processes = {name: attack(gw.port, mode) for name, mode in ATTACKS.items()}
    ok = total = 0
    try:
        time.sleep(1.0)  # let the attacks open their connections first
        deadline = time.monotonic() + DURATION + 15
        while any(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
            total += 1
            with contextlib.suppress(OSError, AssertionError):  # a failure counts as not ok
                ok += roundtrip(gw.port, "GET", "/normal", timeout=3).status == 200
            time.sleep(0.05)
    finally:
        outputs = {name: stop(p) for name, p in processes.items()}
    rate = ok / total if total else 0.0
    print(f"\nslowhttptest: normal client {ok}/{total} = {rate:.2%} served")
    for name, out in outputs.items():
        print(f"  {name}: {final_status(out)}")
    assert total >= 50, f"only {total} normal requests were made"
    assert rate >= 0.99, f"normal client served {ok}/{total}"
