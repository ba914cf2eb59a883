"""Config propagation: time from an apply (a PUT to the control plane) until every proxy serves
the change. Not a test. Run
``python bench/propagation.py [--proxies 50] [--rounds 10] [--routes 1000]``.

It starts a control plane (SQLite), one echo upstream, and one Gateway per proxy (one worker
each), all selecting the namespace ``bench``; ``--routes`` Routes are applied first in one
``POST /v1/apply``, so every change lands on a configuration of that size. Each round adds a
Route with a new path prefix and polls every proxy until it answers 200 there, while a load
thread keeps requesting an existing route on every proxy: any answer but 200 during the
rounds is a failed request. Prints p50/p99/max of the time until the first and the last proxy
serve it, the failed requests, and the machine's load. Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.controlplane.helpers import (
    Processes,
    free_port,
    gateway,
    http,
    path_of,
    route,
    upstream,
    wait_until,
)


def served(port: int, path: str) -> bool:
    try:
        return http("GET", f"http://127.0.0.1:{port}{path}", timeout=2.0)[0] == 200
    except OSError:
        return False


def until_served(port: int, path: str, start: float) -> float:
    while not served(port, path):
        time.sleep(0.02)
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proxies", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--routes", type=int, default=0,
                        help="Routes applied before the rounds (the configuration's size).")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="propylon-bench-"))
    procs = Processes(tmp)
    try:
        run(procs, tmp, args.proxies, args.rounds, args.routes)
    finally:
        procs.stop_all()


class Load:
    """Requests ``path`` on every proxy in turn until stopped; counts answers other than 200."""

    def __init__(self, ports: list[int], path: str) -> None:
        self.ports, self.path = ports, path
        self.sent = self.failed = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for port in itertools.cycle(self.ports):
            if self.stopping.is_set():
                return
            self.sent += 1
            self.failed += not served(port, self.path)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


def run(procs: Processes, tmp: Path, count: int, rounds: int, routes: int = 0) -> None:
    port, echo = free_port(), free_port()
    token_file = tmp / "token"
    procs.start("control", "propylon", "control", "--listen", f"127.0.0.1:{port}", "--store",
                f"sqlite:///{tmp / 'bench.db'}", "--token-file", str(token_file),
                "--log-level", "warning")
    procs.start("echo", "propylon.demo.echo_server", "--port", str(echo), "--name", "bench")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: token_file.exists() and http("GET", url + "/v1/status")[0] == 401)
    token = token_file.read_text().strip()

    def put(resource: dict[str, object]) -> None:
        status, body = http("PUT", url + path_of(resource), resource, token)  # type: ignore[arg-type]
        assert status in (200, 201), body

    put(upstream("echo", "bench", echo))
    ports = [free_port() for _ in range(count)]
    for i, gw in enumerate(ports):
        put(gateway(f"g{i}", "bench", gw, ["bench"]))
        procs.start(f"proxy{i}", "propylon", "proxy", "--control", url, "--gateway",
                    f"bench/g{i}", "--token-file", str(token_file), "--cache-dir",
                    str(tmp / "cache"), "--admin", "off", "--access-log", "off", "--workers", "1",
                    "--log-level", "warning")
    if routes:
        many = [route(f"base{i}", "bench", f"/base{i}", "echo") for i in range(routes)]
        status, body = http("POST", url + "/v1/apply", {"resources": many}, token, timeout=600)
        assert status == 200, body
    put(route("r0", "bench", "/r0", "echo"))
    wait_until(lambda: all(served(p, "/r0") for p in ports), timeout=600, what="warm-up")
    print(f"warm: {count} proxies serve {routes + 1} routes", flush=True)
    first: list[float] = []
    last: list[float] = []
    load = Load(ports, "/r0")
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        for n in range(1, rounds + 1):
            start = time.perf_counter()
            put(route(f"r{n}", "bench", f"/r{n}", "echo"))
            times = list(pool.map(lambda p: until_served(p, f"/r{n}", start), ports))  # noqa: B023
            first.append(min(times))
            last.append(max(times))
    load.stop()
    one, five, _ = os.getloadavg()
    print(f"{count} proxies, {routes + 1}+ routes, {rounds} applies (ms); load average "
          f"{one:.1f} / {five:.1f} on {os.cpu_count()} cores")
    for name, values in (("first proxy", first), ("all proxies", last)):
        print(f"  {name:12} p50 {percentile(values, 0.5) * 1e3:7.1f}  "
              f"p99 {percentile(values, 0.99) * 1e3:7.1f}  max {max(values) * 1e3:7.1f}  "
              f"mean {statistics.fmean(values) * 1e3:7.1f}")
    print(f"  requests during the rounds: {load.sent}, failed (not 200): {load.failed}")


if __name__ == "__main__":
    main()
