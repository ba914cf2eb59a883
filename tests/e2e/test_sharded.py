"""Pattern 2, sharded gateways (connected mode): one control plane, two Gateways; ``main``
serves namespaces foo and bar, ``extra`` only extra. Each fleet serves only its own routes.

Noisy-neighbour isolation: the quiet fleet's (main) p99 latency while the other fleet (extra)
is saturated by wrk stays within 20% of its unloaded p99 (TARGET, asserted). Method:

- each fleet on its own CPU with ``taskset``: quiet CPU 0 = proxy-main (and its worker
  processes), the foo and bar services, the measuring client (this pytest process); noisy
  CPU 1 = proxy-extra (and its workers), the extra service, wrk, and the control plane (idle
  while measuring). ``check_pinning`` asserts it for every thread of every process involved;
- ROUNDS rounds, each one unloaded and one loaded window, in alternating order (U L, L U,
  U L ...) so that drift of the machine over the test cancels out; wrk is started for each
  loaded window (RAMP seconds before the window), stopped by SIGINT right after it, and the
  next window starts SETTLE seconds later. Every window is bounded in count (SAMPLES) and
  time (WINDOW_BUDGET); wrk in time too (-d LOAD_LIMIT);
- a window is SAMPLES sequential keep-alive GETs to the quiet fleet on a new connection
  (after a warm-up), the client's garbage collector off (its pauses are the client's);
- the figures compared are the p99 of all unloaded samples pooled and of all loaded samples
  pooled (25,000 each); per-round figures are printed too. No sample of a counted round is
  dropped;
- CPU use of each window is measured (/proc/stat per CPU, /proc/PID/stat per process) and
  asserted: the noisy CPU at least SATURATED busy in every loaded window (of the time the
  hypervisor let it run: stolen ticks are counted apart), the noisy fleet at most IDLE of its
  CPU in unloaded windows (the load really was on, then really off). A round whose load did
  not saturate the noisy CPU is void, printed and taken again (at most VOID_LIMIT times). Other
  programs on the machine are not pinned and can run on the quiet CPU: their CPU time is
  measured and a WARNING printed above FOREIGN, as they disturb the figures (a concurrent
  CPU-bound program raised the unloaded p99 from ~0.4 to ~0.9 ms in one of our runs). When
  the target is missed, the measurement is taken once more (both printed) and the second one
  is asserted: other programs may have taken the quiet CPU (seen once: another test suite
  run beside this one, 110% of a CPU, ratio 1.60), or one window met a stall that moves the
  pooled p99 (seen once: per-round ratios 0.85, 1.02, 3.65, 1.01 ..., pooled 1.37, then 1.05
  and 1.01 when run again). A fleet that is not isolated misses the target both times.

Figures from repeated runs on the 2-core development machine: examples/sharded/README.md."""

from __future__ import annotations

import gc
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.e2e import (
    CpuTimes,
    Procs,
    command_line,
    cpu_times,
    curl,
    load_example_dir,
    percentile,
    process_ticks,
    process_tree,
    readdress,
    start_control,
    start_proxy,
    thread_cpus,
    wait_port,
    wait_ready,
    wrap,
    write_docs,
)
from tests.support.net import free_port, poll_until

QUIET_CPU, NOISY_CPU = 0, 1
ROUNDS = 10           # (unloaded, loaded) pairs
SAMPLES = 2500        # requests per window (bounded count)
WINDOW_BUDGET = 3.0   # seconds per window (bounded time)
RAMP = 0.5            # seconds of load before a loaded window starts
SETTLE = 0.3          # seconds between stopping the load and the next window
LOAD_LIMIT = 10       # wrk -d: each load is stopped after its window, this only bounds it
SATURATED = 0.9       # the noisy CPU's minimum busy fraction in a loaded window (not stolen)
VOID_LIMIT = 4        # rounds whose load did not saturate the noisy CPU, taken again at most
IDLE = 0.1            # the noisy fleet's maximum CPU share in unloaded windows
FOREIGN = 0.05        # other programs' CPU time (share of one CPU) that gets a warning
TARGET = 1.2          # the goal, asserted: loaded p99 within 20% of unloaded


@dataclass
class Fleet:
    cpu: int
    trees: dict[str, int] = field(default_factory=dict)  # name -> PID (with its children)

    def pids(self, name: str) -> list[int]:
        pid = self.trees[name]
        # the client is this process: its children are everyone's processes, not its own
        return [pid] if pid == os.getpid() else process_tree(pid)

    def all_pids(self) -> set[int]:
        return {pid for name in self.trees for pid in self.pids(name)}


@dataclass
class Usage:
    """CPU time in clock ticks: one fleet's CPU busy at all (interrupts included), running
    that fleet, and stolen by the hypervisor, out of ``total``."""

    busy: int = 0
    own: int = 0
    total: int = 0
    steal: int = 0

    def __iadd__(self, other: Usage) -> Usage:
        self.busy += other.busy
        self.own += other.own
        self.total += other.total
        self.steal += other.steal
        return self

    def share(self, ticks: int) -> float:
        return ticks / max(self.total, 1)

    @property
    def saturation(self) -> float:
        """Busy share of the time the machine had the CPU: ticks the hypervisor stole were
        not the load's to take (a clean-clone run saw the noisy CPU 59 % busy, its wrk at
        6,400 req/s instead of 10,000-11,000, and the quiet fleet stalled in that window)."""
        return self.busy / max(self.total - self.steal, 1)

    def __str__(self) -> str:
        return (f"busy {self.share(self.busy):.0%} (its fleet {self.share(self.own):.0%}, "
                f"stolen {self.share(self.steal):.0%})")


class Meter:
    """What each fleet's CPU did over a window, and how much CPU time other programs on the
    machine took meanwhile (on any CPU: no pinning keeps them off the fleets' CPUs)."""

    def __init__(self, fleets: list[Fleet]) -> None:
        self.fleets = fleets
        self.cpus: dict[int, CpuTimes] = {}
        self.ticks: dict[int, int] = {}

    def start(self) -> None:
        self.ticks = process_ticks()
        self.cpus = cpu_times()

    def stop(self) -> tuple[dict[int, Usage], int]:
        """Usage per fleet CPU, and other programs' ticks."""
        cpus, ticks = cpu_times(), process_ticks()
        ran = {pid: t - self.ticks.get(pid, 0) for pid, t in ticks.items()}
        usage, mine = {}, set()
        for f in self.fleets:
            pids = f.all_pids()
            mine |= pids
            before, after = self.cpus[f.cpu], cpus[f.cpu]
            usage[f.cpu] = Usage(after.busy - before.busy, sum(ran.get(p, 0) for p in pids),
                                 after.total - before.total, after.steal - before.steal)
        return usage, sum(t for pid, t in ran.items() if pid not in mine)


@dataclass
class Window:
    loaded: bool
    samples: list[float]
    usage: dict[int, Usage]  # CPU -> what it did during the window
    other: int               # ticks other programs ran during the window
    rps: str = ""            # wrk's Requests/sec for loaded windows
    load_held: bool = True   # wrk still running at the end of the window

    def busy(self, cpu: int) -> float:
        return self.usage[cpu].share(self.usage[cpu].busy)

    def saturation(self, cpu: int) -> float:
        return self.usage[cpu].saturation


def measure(port: int, path: str) -> list[float]:
    """Sequential keep-alive GETs; latency of each in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    samples: list[float] = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):  # warm-up: connection and first requests not counted
            conn.request("GET", path)
            conn.getresponse().read()
        deadline = time.monotonic() + WINDOW_BUDGET
        while len(samples) < SAMPLES and time.monotonic() < deadline:
            start = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            samples.append((time.perf_counter() - start) * 1000)
            assert response.status == 200
    finally:
        gc.enable()
        conn.close()
    return samples


def check_pinning(fleets: list[Fleet]) -> list[str]:
    """Every thread of every process of each fleet may run on that fleet's CPU only."""
    lines = []
    for fleet in fleets:
        described = []
        for name in fleet.trees:
            pids, threads = fleet.pids(name), 0
            for pid in pids:
                for tid, cpus in thread_cpus(pid).items():
                    threads += 1
                    assert cpus == {fleet.cpu}, (
                        f"{name}: thread {tid} of {pid} ({command_line(pid)}) may run on CPUs "
                        f"{sorted(cpus)}, not only on {fleet.cpu}")
            described.append(f"{name} {len(pids)}p/{threads}t")
        lines.append(f"CPU {fleet.cpu}: " + ", ".join(described))
    return lines


def loaded_window(url: str, port: int, quiet: Fleet, noisy: Fleet,
                  pinning: list[str]) -> Window:
    wrk = subprocess.Popen(wrap(["wrk", "-t1", "-c64", f"-d{LOAD_LIMIT}s", "--timeout", "5s",
                                 url], cpus=str(noisy.cpu)),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        noisy = Fleet(noisy.cpu, {**noisy.trees, "wrk": wrk.pid})
        time.sleep(RAMP)
        if not pinning:  # once, while every process (wrk too) is running
            pinning += check_pinning([quiet, noisy])
        meter = Meter([quiet, noisy])
        meter.start()
        samples = measure(port, "/foo/x")
        usage, other = meter.stop()
        held = wrk.poll() is None
        wrk.send_signal(signal.SIGINT)  # wrk stops and prints its summary
        output, _ = wrk.communicate(timeout=10)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait(5)
    time.sleep(SETTLE)
    rps = next((line.split()[-1] for line in output.splitlines()
                if line.startswith("Requests/sec")), "?")
    return Window(True, samples, usage, other, rps, held)


def unloaded_window(port: int, quiet: Fleet, noisy: Fleet) -> Window:
    meter = Meter([quiet, noisy])
    meter.start()
    samples = measure(port, "/foo/x")
    return Window(False, samples, *meter.stop())


@dataclass
class Isolation:
    """One measurement: ROUNDS interleaved (unloaded, loaded) window pairs, pooled."""

    windows: list[tuple[Window, Window]]
    void: list[tuple[Window, Window]]  # rounds taken again: the load did not saturate
    usage: dict[bool, dict[int, Usage]]
    ratios: list[float]
    p99_unloaded: float
    p99_loaded: float
    foreign: float  # the most CPU other programs took, as a share of one CPU

    @property
    def ratio(self) -> float:
        return self.p99_loaded / self.p99_unloaded


def measure_isolation(main_port: int, extra: str, quiet: Fleet, noisy: Fleet) -> Isolation:
    affinity = os.sched_getaffinity(0)
    own_threads = list(thread_cpus(os.getpid()))
    pinning: list[str] = []
    windows: list[tuple[Window, Window]] = []  # (unloaded, loaded) per round
    void: list[tuple[Window, Window]] = []
    started = time.monotonic()
    try:
        for tid in own_threads:
            os.sched_setaffinity(tid, {QUIET_CPU})
        while len(windows) < ROUNDS:
            if len(windows) % 2 == 0:
                unloaded = unloaded_window(main_port, quiet, noisy)
                loaded = loaded_window(f"{extra}/extra/x", main_port, quiet, noisy, pinning)
            else:
                loaded = loaded_window(f"{extra}/extra/x", main_port, quiet, noisy, pinning)
                unloaded = unloaded_window(main_port, quiet, noisy)
            # A loaded window whose noisy CPU was not saturated did not measure isolation
            # from a saturated neighbour: the round is void, printed, and taken again. Seen
            # in clean-clone runs: one round at 2 % busy while wrk reported 10,258 req/s,
            # one at 88 % and one at 59 % (wrk 6,386 req/s, the machine slowed down).
            if loaded.saturation(NOISY_CPU) < SATURATED and len(void) < VOID_LIMIT:
                void.append((unloaded, loaded))
            else:
                windows.append((unloaded, loaded))
    finally:
        for tid in own_threads:
            os.sched_setaffinity(tid, affinity)
    elapsed = time.monotonic() - started

    print(f"\n[e2e] sharded noisy neighbour, pinning checked: {'; '.join(pinning)}")
    for u, lo in void:
        print(f"[e2e]   void round, taken again: noisy CPU {lo.usage[NOISY_CPU]} in the "
              f"loaded window (wrk {lo.rps} req/s), quiet CPU {lo.usage[QUIET_CPU]}; p99 "
              f"unloaded {percentile(u.samples, 99):.3f} ms, loaded "
              f"{percentile(lo.samples, 99):.3f} ms")
    ratios = []
    for n, (u, lo) in enumerate(windows, 1):
        ratio = percentile(lo.samples, 99) / percentile(u.samples, 99)
        ratios.append(ratio)
        print(f"[e2e]   round {n:2} ({'U,L' if n % 2 else 'L,U'}): p99 unloaded "
              f"{percentile(u.samples, 99):.3f} ms, loaded {percentile(lo.samples, 99):.3f} ms"
              f" (ratio {ratio:.2f}); p50 {percentile(u.samples, 50):.3f} / "
              f"{percentile(lo.samples, 50):.3f} ms; {len(u.samples)}/{len(lo.samples)} "
              f"samples; noisy CPU busy {u.busy(NOISY_CPU):.0%} / {lo.busy(NOISY_CPU):.0%} "
              f"(stolen {lo.usage[NOISY_CPU].share(lo.usage[NOISY_CPU].steal):.0%}); wrk "
              f"{lo.rps} req/s")
    pooled_u = [s for u, _ in windows for s in u.samples]
    pooled_l = [s for _, lo in windows for s in lo.samples]
    p99_u, p99_l = percentile(pooled_u, 99), percentile(pooled_l, 99)
    ratio = p99_l / p99_u
    usage = {kind: {QUIET_CPU: Usage(), NOISY_CPU: Usage()} for kind in (False, True)}
    for pair in windows:
        for window in pair:
            for cpu, used in window.usage.items():
                usage[window.loaded][cpu] += used
    other = {k: sum(w.other for pair in windows for w in pair if w.loaded == k)
             / max(usage[k][QUIET_CPU].total, 1) for k in usage}
    for under_load, cpus in usage.items():
        print(f"[e2e]   in {'loaded' if under_load else 'unloaded'} windows: quiet CPU "
              f"{cpus[QUIET_CPU]}, noisy CPU {cpus[NOISY_CPU]}; other programs "
              f"{other[under_load]:.0%} of a CPU")
    foreign = max(other.values())
    if foreign > FOREIGN:
        print(f"[e2e]   WARNING: other programs on the machine ran {foreign:.0%} of a CPU "
              "during the windows: the machine was not quiet, the figures may be disturbed")
    print(f"[e2e] pooled over {ROUNDS} rounds: quiet fleet p99 unloaded {p99_u:.3f} ms, "
          f"loaded {p99_l:.3f} ms, ratio {ratio:.2f} (target <= {TARGET}); p50 "
          f"{percentile(pooled_u, 50):.3f} / {percentile(pooled_l, 50):.3f} ms; "
          f"{len(pooled_u)}/{len(pooled_l)} samples; per-round ratios "
          f"{', '.join(f'{r:.2f}' for r in ratios)} (median "
          f"{statistics.median(ratios):.2f}); measured in {elapsed:.1f} s")

    return Isolation(windows, void, usage, ratios, p99_u, p99_l, foreign)


# alone: with the other tests run beside it (pytest-xdist), the ratio was 1.43, then 1.25
@pytest.mark.serial
def test_sharded_fleets_and_noisy_neighbour(procs: Procs, tmp_path: Path) -> None:
    pinned = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    quiet_cpu, noisy_cpu = (str(QUIET_CPU), str(NOISY_CPU)) if pinned else (None, None)
    ports = {t: free_port() for t in ("foo", "bar", "extra")}
    for team, port in ports.items():
        procs.python(f"echo-{team}", "propylon.demo.echo_server", "--port", str(port),
                     "--name", team, cpus=noisy_cpu if team == "extra" else quiet_cpu)
    main_port, extra_port = free_port(), free_port()
    docs = readdress(load_example_dir("sharded"),
                     listeners={"main/web": ("127.0.0.1", main_port),
                                "extra/web": ("127.0.0.1", extra_port)},
                     endpoints={t: ("127.0.0.1", p) for t, p in ports.items()})
    config = write_docs(tmp_path / "config" / "all.yaml", docs)
    for port in ports.values():
        wait_port("127.0.0.1", port)
    control = start_control(procs, tmp_path, free_port(), cpus=noisy_cpu)
    control.apply(config.parent)
    admins = {"proxy-main": free_port(), "proxy-extra": free_port()}  # both start together
    start_proxy(procs, control, "infra/main", "proxy-main", tmp_path, admins["proxy-main"],
                cpus=quiet_cpu, wait=False)
    start_proxy(procs, control, "infra/extra", "proxy-extra", tmp_path, admins["proxy-extra"],
                cpus=noisy_cpu, wait=False)
    for name, admin in admins.items():
        wait_ready(procs, name, admin)
    main, extra = f"http://127.0.0.1:{main_port}", f"http://127.0.0.1:{extra_port}"
    poll_until(lambda: curl(main + "/foo", timeout=2).status == 200 and
               curl(extra + "/extra", timeout=2).status == 200, 15, interval=0.1,
               message="both fleets serving")

    # each fleet serves only its own routes
    assert curl(main + "/foo/1").json()["service"] == "foo"
    assert curl(main + "/bar/1").json()["service"] == "bar"
    assert curl(main + "/extra/1").status == 404
    assert curl(extra + "/extra/1").json()["service"] == "extra"
    assert curl(extra + "/foo/1").status == 404
    assert curl(extra + "/bar/1").status == 404

    # noisy neighbour
    if not pinned:
        pytest.skip("noisy-neighbour isolation needs 2 CPUs and taskset (one per fleet)")
    if shutil.which("wrk") is None:
        pytest.skip("wrk (Debian package) is needed for the load generator")
    quiet = Fleet(QUIET_CPU, {"client": os.getpid(), "proxy-main": procs.pid("proxy-main"),
                              "echo-foo": procs.pid("echo-foo"),
                              "echo-bar": procs.pid("echo-bar")})
    noisy = Fleet(NOISY_CPU, {"proxy-extra": procs.pid("proxy-extra"),
                              "echo-extra": procs.pid("echo-extra"),
                              "control": procs.pid("control")})
    result = measure_isolation(main_port, extra, quiet, noisy)
    if result.ratio > TARGET:
        # Either other programs took the quiet CPU while measuring (pinning cannot keep them
        # off), or one window met a stall of a few milliseconds that moves the pooled p99 (a
        # clean-clone run saw per-round ratios 0.85, 1.02, 3.65, 1.01 ... with 1 % foreign
        # CPU, then 1.05 and 1.01 pooled when run again). Measure once more, both printed:
        # a fleet that is not isolated misses the target both times.
        print(f"[e2e] ratio {result.ratio:.2f} over the target (other programs took "
              f"{result.foreign:.0%} of a CPU): measuring again")
        result = measure_isolation(main_port, extra, quiet, noisy)
    windows, usage, ratios = result.windows, result.usage, result.ratios
    p99_u, p99_l, ratio, foreign = (result.p99_unloaded, result.p99_loaded, result.ratio,
                                    result.foreign)

    idle = usage[False][NOISY_CPU]
    assert idle.share(idle.own) <= IDLE, f"noisy fleet not idle in unloaded windows: {idle}"
    for u, lo in windows:
        assert lo.load_held, "the load ended before its window did"
        assert lo.saturation(NOISY_CPU) >= SATURATED, (
            f"noisy CPU only {lo.saturation(NOISY_CPU):.0%} busy under load "
            f"({len(result.void)} rounds taken again already)")
        assert min(len(u.samples), len(lo.samples)) >= SAMPLES // 2, "windows cut short"
    assert ratio <= TARGET, (p99_u, p99_l, ratios, f"other programs {foreign:.0%} of a CPU")
