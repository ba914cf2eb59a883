"""The Python cost of one proxied request, without sockets or syscalls.

Drives the real ServerConnection, Session, Forwarder and ClientConnection in memory:
a request head goes in, the upstream request comes out, a canned upstream response goes in,
the client response comes out. What remains per request in a real run is the kernel's share
(reads, writes, epoll), which this deliberately leaves out.

    python bench/micro_exchange.py [--requests 200000] [--profile | --bytecodes]
                                   [--tracing RATIO] [--policy NAME]

``--tracing RATIO`` gives the Gateway ``tracing: {sampling: RATIO}`` (spans made by the SDK,
not exported): 0 is what an unsampled request costs (99 % of them at a 1 % ratio), 1 a
sampled one.

``--policy NAME`` requests the route of ``bench/policies.py`` that carries that one policy
(``none`` is its route without policies; ``extAuth`` and ``rateLimit-global`` need servers and
are not offered), with the headers that benchmark sends: the policy's cost is the difference
to ``--policy none``. ``--headers-of NAME`` sends another route's fields instead: ``--policy
none --headers-of jwt`` is the jwt route's request (its token and all) to the route without
policies, which leaves out what a longer request costs to parse and forward.

Instructions per request (deterministic; the machine's load does not matter):

    for n in 1000 6000; do valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
        python bench/micro_exchange.py --exactly $n 2>&1 | grep Collected; done
    # (second total - first total) / 5000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import os
import pstats
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import uvloop

from propylon.ir import TracingIR
from propylon.proxy.h1.client import ClientConnection
from propylon.proxy.h1.server import ServerConnection
from propylon.proxy.pool import PoolRegistry
from propylon.proxy.worker_state import ListenerState, WorkerState
from propylon.runtime.compile import Services, compile_snapshot
from propylon.standalone import build_snapshot

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18090\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 19:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n"
    + b"x" * 100
)


class MemoryTransport(asyncio.Transport):
    """Counts what is written; never blocks, never closes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def policy_config(name: str, root: Path, headers_of: str | None = None) -> tuple[Path, bytes]:
    """bench/policies.py's configuration written under ``root``, and a request for the route
    of the policy ``name`` with the fields that benchmark sends it (those it sends the route
    of ``headers_of`` if given)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import policies

    routes = {route: headers for route, _, headers in policies.ROUTES}
    if headers_of is not None and headers_of not in routes:
        raise SystemExit(f"--headers-of: one of {', '.join(routes)}")
    if name not in routes or name in ("extAuth", "rateLimit-global"):
        raise SystemExit(f"--policy: one of {', '.join(routes)} but extAuth, rateLimit-global")
    for file, text in policies.credentials("ES256").items():
        (root / file).write_text(text)
    config = root / "gateway.yaml"
    config.write_text(policies.config(18080, 1, 1).replace("$PORT", "18090"))
    sent = routes[headers_of if headers_of is not None else name]
    fields = "".join(f"{k}: {v}\r\n" for k, v in (sent or policies.PADDING).items())
    return config, f"GET /{name} HTTP/1.1\r\nHost: 127.0.0.1:18090\r\n{fields}\r\n".encode()


def setup(loop: asyncio.AbstractEventLoop, tracing: float | None = None,
          config: Path | None = None) -> tuple[ServerConnection, ClientConnection]:
    result = build_snapshot([config or Path(__file__).with_name("gateway.yaml")])
    assert result.snapshot is not None, result.errors
    snapshot = result.snapshot
    if tracing is not None:
        gateways = tuple(dataclasses.replace(g, tracing=TracingIR(sampling=tracing))
                         for g in snapshot.gateways)
        snapshot = dataclasses.replace(snapshot, gateways=gateways)
    services = Services(PoolRegistry(loop), export_traces=False)
    runtime = compile_snapshot(snapshot, services)
    ((key, gateway),) = runtime.listeners.items()
    listener = ListenerState(*key)
    listener.gateway = gateway
    worker = WorkerState(loop, None)
    proto = ServerConnection(worker, listener)
    proto.connection_made(MemoryTransport())
    (cluster,) = gateway.clusters.values()
    pool = cluster.endpoints[0].pool
    conn = ClientConnection(pool)
    conn.connection_made(MemoryTransport())
    pool.total = 1
    pool.idle.append(conn)
    return proto, conn


def run(proto: ServerConnection, conn: ClientConnection, n: int, request: bytes = REQUEST
        ) -> float:
    batch = proto.batch

    def end_of_turn() -> None:
        # What the loop runs at the end of a turn. Scheduling it (one call_soon) is paid once
        # per turn, for all the requests of the turn (about 30 in the peers benchmark), so it
        # is left out here: ``scheduled`` stays true.
        batch.flush()
        batch.scheduled = True

    batch.scheduled = True
    start = time.perf_counter()
    for _ in range(n):
        proto.data_received(request)
        end_of_turn()
        conn.data_received(RESPONSE)
        end_of_turn()
    return (time.perf_counter() - start) / n


def count_bytecodes(proto: ServerConnection, conn: ClientConnection, n: int, request: bytes
                    ) -> None:
    """Bytecodes executed per request, by function: deterministic, unlike wall time."""
    per_function: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return count

    def count(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            per_function[frame.f_code.co_qualname] += 1
        return count

    sys.settrace(trace)
    try:
        run(proto, conn, n, request)
    finally:
        sys.settrace(None)
    print(f"{sum(per_function.values()) / n:.0f} bytecodes per proxied request")
    for name, total in per_function.most_common(60):
        print(f"{total / n:8.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--bytecodes", action="store_true",
                        help="count bytecodes per request and per function (sys.settrace)")
    parser.add_argument("--exactly", type=int, metavar="N",
                        help="run N requests after the warm-up and print nothing (for "
                             "callgrind: the instruction difference of two N is per request)")
    parser.add_argument("--tracing", type=float, metavar="RATIO",
                        help="the Gateway traces, sampling this ratio (spans not exported)")
    parser.add_argument("--policy", metavar="NAME",
                        help="the route of bench/policies.py carrying this policy")
    parser.add_argument("--headers-of", metavar="NAME",
                        help="with --policy: send the fields bench/policies.py sends this "
                             "policy's route (e.g. --policy none --headers-of jwt: the same "
                             "request to the route without policies)")
    args = parser.parse_args()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory() as tmp:
        config, request = (policy_config(args.policy, Path(tmp), args.headers_of) if args.policy
                           else (None, REQUEST))
        cwd = os.getcwd()
        os.chdir(tmp)  # the files the policies name are relative to it, as for the gateway
        try:
            proto, conn = setup(loop, args.tracing, config)
        finally:
            os.chdir(cwd)
    run(proto, conn, 2000, request)  # warm up
    if args.exactly is not None:
        run(proto, conn, args.exactly, request)
        return
    if args.bytecodes:
        count_bytecodes(proto, conn, 200, request)
        return
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(proto, conn, args.requests // 4, request)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
        return
    best = min(run(proto, conn, args.requests // 5, request) for _ in range(5))
    print(f"{best * 1e6:.2f} us of Python per proxied request (best of 5)")
    loop.close()


if __name__ == "__main__":
    main()
