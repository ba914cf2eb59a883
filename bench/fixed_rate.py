"""Latency at a fixed request rate, and the CPU each request costs the proxy, beside nginx.

Usage::

    python bench/fixed_rate.py [--rate 5000] [--seconds 15] [--rounds 3] [--peers]
        [--tree NAME=DIR[:pure]] ...

Starts the peers' upstream (one nginx worker, pinned to CPU 0 with this client, as
``../shared/bench/peers/run-peers.sh`` pins wrk), then one gateway per ``--tree`` (one worker,
access log off, pinned to CPU 1; ``DIR`` is a source tree put first on ``PYTHONPATH``, e.g. a
``git worktree`` of another commit; ``:pure`` sets ``PROPYLON_NO_EXTENSIONS=1``; default: this
tree as ``propylon``), and with ``--peers`` an nginx proxy of one worker on CPU 1. Each round
offers ``--rate`` requests/s to each target in turn for ``--seconds`` over ``--connections``
keep-alive connections, open loop: request *i* is due at ``start + i / rate`` whatever the
answers before it, and its latency counts from that moment (a request waiting for a free
connection waits on the clock, so a stall is not hidden, as wrk2 corrects coordinated
omission). Prints one Markdown row per target: the rate achieved, latency percentiles over
all rounds, errors, and the CPU (user and system, from ``/proc``) the target's worker spent
per request, which at a fixed rate compares builds without the load generator in the way.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httptools

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from idle_connections import NGINX_PROXY, children  # noqa: E402
from policies import LOAD_CPU, PROXY_CPU, nginx_upstream, pin_tree  # noqa: E402

from tests.integration.policies._helpers import (  # noqa: E402
    GatewayProc,
    free_port,
    poll_until,
    port_open,
    stop,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: fixed-rate\r\n\r\n"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    sent: int = 0
    elapsed: float = 0.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the latency of each answer is taken from its due time."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.due = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def send(self, due: float) -> None:
        assert self.transport is not None
        self.due, self.busy = due, True
        self.transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.client.failed(self)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.busy = False
        self.client.answered(self, self.due, status == 200)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.client.failed(self)


class _Client:
    def __init__(self, loop: asyncio.AbstractEventLoop, result: Round) -> None:
        self.loop, self.result = loop, result
        self.idle: list[_Connection] = []
        self.waiting: collections.deque[float] = collections.deque()
        self.outstanding = 0

    def dispatch(self, due: float) -> None:
        self.outstanding += 1
        if self.idle:
            self.idle.pop().send(due)
        else:
            self.waiting.append(due)

    def answered(self, conn: _Connection, due: float, ok: bool) -> None:
        self.outstanding -= 1
        if ok:
            self.result.latencies.append(self.loop.time() - due)
        else:
            self.result.errors += 1
        if self.waiting:
            conn.send(self.waiting.popleft())
        else:
            self.idle.append(conn)

    def failed(self, conn: _Connection) -> None:
        self.outstanding -= 1
        self.result.errors += 1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.transport is not None:
            conn.transport.close()


async def offer(port: int, rate: int, seconds: float, connections: int) -> Round:
    loop = asyncio.get_running_loop()
    result = Round()
    client = _Client(loop, result)
    for _ in range(connections):
        _transport, conn = await loop.create_connection(lambda: _Connection(client),
                                                        "127.0.0.1", port)
        client.idle.append(conn)
    total = int(rate * seconds)
    start = loop.time() + 0.01
    while result.sent < total:
        due_now = min(total, int((loop.time() - start) * rate) + 1)
        while result.sent < due_now:
            client.dispatch(start + result.sent / rate)
            result.sent += 1
        await asyncio.sleep(0.0005)
    deadline = loop.time() + 10
    while client.outstanding > 0 and loop.time() < deadline:
        await asyncio.sleep(0.005)
    result.errors += client.outstanding  # no answer within 10 s of the last one due
    result.elapsed = loop.time() - start
    for conn in client.idle:
        assert conn.transport is not None
        conn.transport.close()
    return result


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # utime, stime


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))]


@dataclass
class Target:
    name: str
    port: int
    worker: int
    rounds: list[Round] = field(default_factory=list)
    user: float = 0.0
    system: float = 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--peers", action="store_true", help="an nginx proxy too")
    parser.add_argument("--tree", action="append", default=[],
                        help="NAME=DIR[:pure], a source tree to run a gateway from")
    args = parser.parse_args()
    trees = args.tree or [f"propylon={REPO}"]
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started: list[subprocess.Popen[bytes]] = []
        gateways: list[GatewayProc] = []
        targets: list[Target] = []
        upstream = nginx_upstream(root)
        if upstream is None:
            raise SystemExit("nginx is needed (the upstream)")
        started.append(upstream[0])
        try:
            config = (REPO / "bench" / "gateway.yaml").read_text().replace(
                "port: 18090", "port: $PORT").replace("port: 18080", f"port: {upstream[1]}")
            for spec in trees:
                name, _, where = spec.partition("=")
                tree, _, mode = where.partition(":")
                env = {"PYTHONPATH": tree}
                if mode == "pure":
                    env["PROPYLON_NO_EXTENSIONS"] = "1"
                gw = GatewayProc(root / name, config, env=env)
                gateways.append(gw)
                pin_tree(gw.proc.pid, PROXY_CPU)
                (worker,) = children(gw.proc.pid)
                targets.append(Target(name, gw.port, worker))
            if args.peers:
                port = free_port()
                conf = root / "proxy-nginx.conf"
                conf.write_text(NGINX_PROXY.format(run=root, port=port, upstream=upstream[1]))
                binary = shutil.which("nginx") or "/usr/sbin/nginx"
                nginx = subprocess.Popen(["taskset", "-c", PROXY_CPU, binary, "-p", str(root),
                                          "-e", str(root / "proxy-error.log"), "-c", str(conf)])
                started.append(nginx)
                poll_until(lambda: port_open(port))
                (nginx_worker,) = children(nginx.pid)
                targets.insert(0, Target("nginx", port, nginx_worker))
            for target in targets:  # warm-up: connections, caches, the first compilations
                asyncio.run(offer(target.port, min(args.rate, 1000), 1.0, args.connections))
            for _ in range(args.rounds):
                for target in targets:
                    user, system = cpu_seconds(target.worker)
                    target.rounds.append(asyncio.run(
                        offer(target.port, args.rate, args.seconds, args.connections)))
                    user_after, system_after = cpu_seconds(target.worker)
                    target.user += user_after - user
                    target.system += system_after - system
                    time.sleep(0.5)
        finally:
            for gw in gateways:
                gw.stop()
            for proc in started:
                stop(proc)
    print(f"{args.rate} requests/s offered for {args.seconds:g} s x {args.rounds} rounds, "
          f"{args.connections} connections, load average {os.getloadavg()[0]:.2f}")
    print("| target | achieved rps | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors "
          "| worker CPU µs per request: user | system |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for target in targets:
        latencies = sorted(x for r in target.rounds for x in r.latencies)
        sent = sum(r.sent for r in target.rounds)
        elapsed = sum(r.elapsed for r in target.rounds)
        errors = sum(r.errors for r in target.rounds)
        cells = [f"{percentile(latencies, q) * 1e3:.2f}" for q in (0.5, 0.9, 0.99, 0.999)]
        print(f"| {target.name} | {sent / elapsed:,.0f} | {' | '.join(cells)} "
              f"| {latencies[-1] * 1e3:.1f} | {errors} | {target.user / sent * 1e6:.1f} "
              f"| {target.system / sent * 1e6:.1f} |")


if __name__ == "__main__":
    main()
