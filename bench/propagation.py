"""Config propagation: time from an apply (a PUT to the control plane) until every proxy serves
the change. Not a test. Run
``python bench/propagation.py [--proxies 50] [--gateways 50] [--rounds 10] [--routes 1000]``.

It starts a control plane (SQLite), one echo upstream, ``--gateways`` Gateways all selecting the
namespace ``bench`` and ``--proxies`` proxies of one worker each, spread over the Gateways
(default: one Gateway per proxy). ``--routes`` Routes are applied first in one
``POST /v1/apply``, so every change lands on a configuration of that size; the proxies are
then started ``--batch`` at a time, each batch once the previous runs the configuration (50
proxies compiling it at once on 2 cores made workers miss the supervisor's 10 s install
timeout). Each round adds a
Route with a new path prefix (after ``--settle`` seconds of quiet) and waits until every proxy
serves it:

- a proxy serves the change once it reported the new version installed on its worker (ACK),
  as the control plane's ``/metrics`` counts them (``proxies_current`` of the new version);
  then one request on each Gateway's port checks the route (proxies sharing a Gateway share
  its port with SO_REUSEPORT, so a request cannot pick one);
- with ``--poll-proxies`` (one proxy per Gateway), each proxy is asked for the new path every
  20 ms until it answers 200 instead (the earlier method: it measures what clients see, but
  50 pollers cost seconds of CPU per change on 2 cores, slowing what they measure).

The first read of ``/metrics`` in a round waits half the previous round's first ACK (the
reads cost the control plane CPU the proxies need); a later read can only make a figure later.

A load thread keeps requesting an existing route on every Gateway's port, from the quiet
period before the rounds on (so the rounds see steady traffic): any answer but 200 is a failed
request. Each round's figures are printed as it ends; then p50/p99/max of the time until
the first and the last proxy serve it, the failed requests, the control plane's IR answers by
form (delta or full snapshot), the CPU seconds the control plane and the proxies (with their
workers) spent in the rounds, per proxy and change split between supervisor and worker,
and the machine's load. Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import itertools
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
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


def until(check: Callable[[], bool], start: float) -> float:
    while not check():
        time.sleep(0.02)
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proxies", type=int, default=20)
    parser.add_argument("--gateways", type=int, default=0,
                        help="Gateways the proxies are spread over (default: one per proxy).")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--routes", type=int, default=0,
                        help="Routes applied before the rounds (the configuration's size).")
    parser.add_argument("--batch", type=int, default=5,
                        help="Proxies started at a time in the warm-up (each batch waits for "
                             "the previous to run the configuration).")
    parser.add_argument("--poll-proxies", action="store_true",
                        help="With one proxy per Gateway: ask every proxy for the new path "
                             "every 20 ms instead of counting ACKs (50 pollers cost seconds "
                             "of CPU per change on 2 cores).")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="Seconds to wait between the warm-up and the rounds.")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="propylon-bench-"))
    procs = Processes(tmp)
    try:
        run(procs, tmp, args.proxies, args.rounds, args.routes, args.gateways or args.proxies,
            args.settle, args.batch, args.poll_proxies)
    finally:
        procs.stop_all()


class Load:
    """Requests ``path`` on every port in turn until stopped; counts answers other than 200."""

    def __init__(self, ports: list[int], path: str) -> None:
        self.ports, self.path = ports, path
        self.sent = self.failed = 0
        self.failures: dict[str, int] = {}  # status or exception -> count
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for port in itertools.cycle(self.ports):
            if self.stopping.is_set():
                return
            self.sent += 1
            try:
                status = str(http("GET", f"http://127.0.0.1:{port}{self.path}", timeout=2.0)[0])
            except OSError as exc:
                status = type(exc).__name__
            if status != "200":
                self.failed += 1
                self.failures[status] = self.failures.get(status, 0) + 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


class ControlMetrics:
    """The control plane's ``/metrics`` (no token): versions and current proxies per Gateway."""

    _SERIES = re.compile(r'^propylon_control_(\w+)\{([^}]*)\} ([0-9.e+-]+)$', re.M)

    # only what is read here: the whole exposition (every Gateway's histograms) cost the
    # control plane 16 ms of CPU per read at 50 Gateways, read every 20 ms during a round
    NAMES = ("gateway_version_info", "proxies_current", "ir_answers_total")

    def __init__(self, url: str) -> None:
        self.url = url + "/metrics?" + "&".join(
            f"name[]=propylon_control_{name}" for name in self.NAMES)

    def read(self) -> dict[str, dict[tuple[str, ...], float]]:
        with urllib.request.urlopen(self.url, timeout=5) as answer:
            text = answer.read().decode()
        found: dict[str, dict[tuple[str, ...], float]] = {}
        for name, labels, value in self._SERIES.findall(text):
            key = tuple(re.findall(r'="([^"]*)"', labels))
            found.setdefault(name, {})[key] = float(value)
        return found

    def versions(self) -> dict[str, str]:
        return {g: v for g, v in self.read().get("gateway_version_info", {})}

    def settled(self, proxies: list[int]) -> bool:
        """Whether Gateway ``g{n}`` has ``proxies[n]`` proxies running its served version,
        for every ``n``."""
        current = self.read().get("proxies_current", {})
        return all(current.get((f"bench/g{n}",), 0) >= count
                   for n, count in enumerate(proxies))

    def answers(self) -> dict[str, float]:
        """IR polls answered so far, by form (``delta`` or ``full``), all Gateways summed."""
        totals: dict[str, float] = {}
        for labels, value in self.read().get("ir_answers_total", {}).items():
            form = next(v for v in labels if v in ("delta", "full"))
            totals[form] = totals.get(form, 0) + value
        return totals


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system time of ``pid`` and (``children``) its living children (a proxy's
    workers)."""
    total = 0.0
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if not children:
            return total
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    return total


def run(procs: Processes, tmp: Path, count: int, rounds: int, routes: int = 0,
        gateways: int = 0, settle: float = 0.0, batch: int = 5,
        poll_proxies: bool = False) -> None:
    gateways = min(gateways or count, count)
    poll_proxies = poll_proxies and gateways == count
    port, echo = free_port(), free_port()
    token_file = tmp / "token"
    control = procs.start("control", "propylon", "control", "--listen", f"127.0.0.1:{port}",
                          "--store", f"sqlite:///{tmp / 'bench.db'}", "--token-file",
                          str(token_file), "--log-level", "warning")
    procs.start("echo", "propylon.demo.echo_server", "--port", str(echo), "--name", "bench")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: token_file.exists() and http("GET", url + "/v1/status")[0] == 401)
    token = token_file.read_text().strip()
    metrics = ControlMetrics(url)

    def put(resource: dict[str, object]) -> None:
        status, body = http("PUT", url + path_of(resource), resource, token)
        assert status in (200, 201), body

    put(upstream("echo", "bench", echo))
    ports = [free_port() for _ in range(gateways)]
    for g, gw in enumerate(ports):
        put(gateway(f"g{g}", "bench", gw, ["bench"]))
    members = [sum(1 for i in range(count) if i % gateways == g) for g in range(gateways)]
    if routes:
        many = [route(f"base{i}", "bench", f"/base{i}", "echo") for i in range(routes)]
        status, body = http("POST", url + "/v1/apply", {"resources": many}, token, timeout=600)
        assert status == 200, body
    put(route("r0", "bench", "/r0", "echo"))
    proxies = []
    started = [0] * gateways
    for first_of_batch in range(0, count, batch):
        for i in range(first_of_batch, min(first_of_batch + batch, count)):
            proxies.append(procs.start(
                f"proxy{i}", "propylon", "proxy", "--control", url, "--gateway",
                f"bench/g{i % gateways}", "--token-file", str(token_file), "--cache-dir",
                str(tmp / f"cache{i}"), "--admin", "off", "--access-log", "off", "--workers",
                "1", "--log-level", "warning"))
            started[i % gateways] += 1
        wait_until(lambda: metrics.settled(started), timeout=900,
                   what="the proxies started so far on the served version")
    wait_until(lambda: all(served(p, "/r0") for p in ports), timeout=900, what="warm-up")
    wait_until(lambda: metrics.settled(members), timeout=900, what="every proxy current")
    print(f"warm: {count} proxies of {gateways} Gateway(s) serve {routes + 1} routes",
          flush=True)
    # the load runs from here: the rounds measure changes under steady traffic (started with
    # the first round, it met 50 workers' first requests and cold caches there: that round
    # was the slowest of a run, by up to 300 ms)
    load = Load(ports, "/r0")
    idle_from = {p.pid: cpu_seconds(p.pid) for p in [control, *proxies]}
    time.sleep(settle)  # the warm-up's installs are over: the rounds do not share the CPU
    first: list[float] = []
    last: list[float] = []
    answers_before = metrics.answers()
    cpu_before = {p.pid: cpu_seconds(p.pid) for p in [control, *proxies]}
    own_before = {p.pid: cpu_seconds(p.pid, children=False) for p in proxies}
    idle = sum(cpu_before[pid] - was for pid, was in idle_from.items()) / max(settle, 1e-9)
    began = time.perf_counter()
    sent_before, failed_before = load.sent, load.failed
    previous_first = 0.0  # the last round's first ACK (s): what the next round's reads wait on
    with concurrent.futures.ThreadPoolExecutor(max(count, 1)) as pool:
        # round 0 is not counted: the first read of /metrics of a round waits on the round
        # before's figure (below); without one it read every 20 ms from the start, taking
        # the control plane's CPU while it translated, and round 1 was always the slowest
        for n in range(0 if not poll_proxies else 1, rounds + 1):
            if n == 1:
                cpu_before = {p.pid: cpu_seconds(p.pid) for p in [control, *proxies]}
                own_before = {p.pid: cpu_seconds(p.pid, children=False) for p in proxies}
                answers_before = metrics.answers()
                began = time.perf_counter()
                sent_before, failed_before = load.sent, load.failed
            start = time.perf_counter()
            before = metrics.versions()
            put(route(f"r{n}" if n else "warm", "bench", f"/r{n}" if n else "/warm", "echo"))
            if poll_proxies:
                times = list(pool.map(
                    lambda p: until(lambda: served(p, f"/r{n}"), start), ports))  # noqa: B023
            else:
                # the first read of /metrics waits half the last round's first ACK: each
                # read costs the control plane 2-3 ms (the fleet and the process collector),
                # which, every 20 ms, was half of its CPU per change, taken from the proxies
                # it measures; a change done sooner is seen at that read (a late figure,
                # never an early one)
                time.sleep(min(previous_first / 2, 1.0))
                times = shared_round(metrics, before, members, start)
                assert all(served(p, f"/r{n}" if n else "/warm") for p in ports), \
                    f"round {n} not served"
            previous_first = min(times)
            if n == 0:
                print(f"  round   0 (not counted): {max(times) * 1e3:6.1f} ms", flush=True)
                continue
            first.append(min(times))
            last.append(max(times))
            print(f"  round {n:3}: first proxy {first[-1] * 1e3:6.1f}  all proxies "
                  f"{last[-1] * 1e3:6.1f} ms", flush=True)
    load.stop()
    took = time.perf_counter() - began
    cpu = {pid: cpu_seconds(pid) - was for pid, was in cpu_before.items()}
    own = sum(cpu_seconds(pid, children=False) - was for pid, was in own_before.items())
    one, five, _ = os.getloadavg()
    print(f"{count} proxies of {gateways} Gateway(s), {routes + 1}+ routes, {rounds} applies "
          f"(ms); load average {one:.1f} / {five:.1f} on {os.cpu_count()} cores")
    for name, values in (("first proxy", first), ("all proxies", last)):
        print(f"  {name:12} p50 {percentile(values, 0.5) * 1e3:7.1f}  "
              f"p99 {percentile(values, 0.99) * 1e3:7.1f}  max {max(values) * 1e3:7.1f}  "
              f"mean {statistics.fmean(values) * 1e3:7.1f}")
    print(f"  requests during the rounds: {load.sent - sent_before}, failed (not 200): "
          f"{load.failed - failed_before}"
          f"{f'; before the rounds {failed_before}' if failed_before else ''}"
          f"{f' {load.failures}' if load.failures else ''}")
    answers = {form: n - answers_before.get(form, 0) for form, n in metrics.answers().items()}
    print(f"  IR answers by form: {answers or 'not counted by this control plane'}")
    proxy_cpu = sum(cpu[p.pid] for p in proxies)
    print(f"  CPU seconds in the rounds ({took:.1f} s): control plane {cpu[control.pid]:.1f}, "
          f"proxies {proxy_cpu:.1f} ({proxy_cpu / max(count, 1) / rounds * 1e3:.0f} ms per "
          f"proxy and change: supervisor {own / max(count, 1) / rounds * 1e3:.1f}, workers "
          f"{(proxy_cpu - own) / max(count, 1) / rounds * 1e3:.1f}); all of them before the "
          f"rounds, under the load: {idle:.2f} CPU s per second")


def shared_round(metrics: ControlMetrics, before: dict[str, str], members: list[int],
                 start: float) -> list[float]:
    """Seconds until the first and until every Gateway's proxies all run its new version."""
    done: dict[str, float] = {}
    first = 0.0
    while len(done) < len(members):
        try:
            read = metrics.read()
        except OSError:  # a control plane busy for seconds (before deltas: sealing on its loop)
            continue
        now = time.perf_counter() - start
        served_by = read.get("proxies_current", {})
        for key, version in read.get("gateway_version_info", {}):
            if key in done or version == before.get(key):
                continue
            current = served_by.get((key,), 0)
            if current and not first:
                first = now
            if current >= members[int(key.rsplit("g", 1)[1])]:
                done[key] = now
        time.sleep(0.02)
    return [first or max(done.values()), max(done.values())]


if __name__ == "__main__":
    main()
