"""Config propagation: time from an apply (a PUT to the control plane) until 20 proxies serve
the change. Not a test. Run ``python bench/propagation.py [--proxies 20] [--rounds 30]``.

It starts a control plane (SQLite), one echo upstream, and one Gateway per proxy, all
selecting the namespace ``bench``; each round adds a Route with a new path prefix and polls
every proxy until it answers 200 there. Prints p50/p99/max of the time until the first and the
last proxy serve it. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
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
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="propylon-bench-"))
    procs = Processes(tmp)
    try:
        run(procs, tmp, args.proxies, args.rounds)
    finally:
        procs.stop_all()


def run(procs: Processes, tmp: Path, count: int, rounds: int) -> None:
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
                    str(tmp / "cache"), "--admin", "off", "--access-log", "off",
                    "--log-level", "warning")
    put(route("r0", "bench", "/r0", "echo"))
    wait_until(lambda: all(served(p, "/r0") for p in ports), timeout=120, what="warm-up")
    print(f"warm: {count} proxies serve", flush=True)
    first: list[float] = []
    last: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        for n in range(1, rounds + 1):
            start = time.perf_counter()
            put(route(f"r{n}", "bench", f"/r{n}", "echo"))
            times = list(pool.map(lambda p: until_served(p, f"/r{n}", start), ports))  # noqa: B023
            first.append(min(times))
            last.append(max(times))
    print(f"{count} proxies, {rounds} applies (ms)")
    for name, values in (("first proxy", first), ("all proxies", last)):
        print(f"  {name:12} p50 {percentile(values, 0.5) * 1e3:7.1f}  "
              f"p99 {percentile(values, 0.99) * 1e3:7.1f}  max {max(values) * 1e3:7.1f}  "
              f"mean {statistics.fmean(values) * 1e3:7.1f}")


if __name__ == "__main__":
    main()
