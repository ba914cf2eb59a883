"""A sans-IO harness around the real downstream protocol, for the HTTP/1.1 fuzz target.

One compiled Gateway (``FuzzGateway``, ``CONFIG``) serves many client connections
(``ClientConnection``), each fed bytes through an in-memory transport that honours
``pause_reading`` as a socket would. Upstreams are in memory too (``fake_upstream``). The event
loop's clock is virtual: time moves only when the harness says, so header, keep-alive, idle,
connect and route timeouts fire on demand and runs are deterministic. The harness looks at the
gateway from outside (what it writes, what it reads, what reaches the upstreams), not at its
objects, so that it survives their changes.

Everything the harness sees go wrong is appended to ``FuzzGateway.problems``; the fuzz target
turns a non-empty list into a failure (``known_issues`` excepted).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import httptools

from propylon.config import load_text
from propylon.filters.base import FilterEnv
from propylon.proxy.clock import CLOCK
from propylon.proxy.h1.server import ServerConnection
from propylon.proxy.pool import PoolClient, PoolRegistry
from propylon.proxy.worker_state import ListenerState, WorkerState
from propylon.runtime.compile import Services, compile_snapshot
from propylon.runtime.compiled import GatewayRuntime
from propylon.standalone import build_from_resources
from tests.fuzz.fake_upstream import (
    BLACKHOLE,
    DEAD,
    SLOW,
    UPSTREAM,
    FakePool,
    UpstreamRequest,
    UpstreamTransport,
    answer_for,
)
from tests.fuzz.known_issues import KNOWN_ISSUES
from tests.fuzz.proxy_prefix import proxy_listeners

TRUSTED_PEER = ("192.0.2.10", 40000)  # inside trustedProxies: forwarding headers are read
CLIENT_PEER = ("198.51.100.7", 40000)
# What the gateway may have read from a client and not yet passed on (structured mode, where
# every request is forwarded): the body it buffers while the upstream connects (256 KiB in
# proxy/forwarder.py) plus the read that crossed that line and one pipelined read.
MAX_BACKLOG = 256 * 1024 + 2 * 65536 + 4096

CONFIG = """
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: fuzz}
spec:
  listeners:
    - name: web
      port: 8080
      address: 127.0.0.1
      limits: {maxRequestLineBytes: 512, maxHeaderBytes: 2048, maxHeaderCount: 16,
               headerReadTimeout: 2s, keepAliveTimeout: 5s, streamIdleTimeout: 10s}
  trustedProxies: [192.0.2.0/24]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: only-host}
spec:
  hostnames: [only.example]
  rules:
    - matches: [{path: {prefix: /}, method: GET}]
      directResponse: {status: 200, body: only}
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: main}
spec:
  rules:
    - matches: [{path: {exact: /direct}}]
      directResponse: {status: 200, body: direct}
    - matches: [{path: {prefix: /redirect}}]
      redirect: {path: /elsewhere, statusCode: 302}
    - matches: [{path: {prefix: /dead}}]
      forward: {backends: [{upstream: dead}], retries: {attempts: 1, on: [connect-failure]}}
    - matches: [{path: {prefix: /slowconnect}}]
      forward: {backends: [{upstream: slow}], timeout: 1s}
    - matches: [{path: {prefix: /slowbody}}]
      forward: {backends: [{upstream: slow}], timeout: 30s}
    - matches: [{path: {prefix: /blackhole}}]
      forward: {backends: [{upstream: blackhole}], timeout: 1s}
    - matches: [{path: {prefix: /slowretry2}}]
      forward:
        backends: [{upstream: slow}]
        timeout: 10s
        retries: {attempts: 1, on: [timeout], perTryTimeout: 2s}
    - matches: [{path: {prefix: /slowretry}}]
      forward:
        backends: [{upstream: slow}]
        timeout: 10s
        retries: {attempts: 1, on: [timeout, connect-failure], perTryTimeout: 1s}
    - matches: [{path: {prefix: /limited}}]
      forward: {backends: [{upstream: up}]}
      policies: [{requestLimits: {maxBodySize: 64, maxHeaderSize: 512}}]
    - matches: [{path: {prefix: /retry}}]
      forward:
        backends: [{upstream: up}]
        timeout: 3s
        retries: {attempts: 2, on: [5xx, reset], perTryTimeout: 1s}
    - matches: [{path: {prefix: /mirror}}]
      forward: {backends: [{upstream: up}], mirror: {upstream: up, percent: 100}}
    - matches: [{path: {prefix: /cors}}]
      forward: {backends: [{upstream: up}]}
      policies:
        - cors: {allowOrigins: ["https://a.example"]}
        - headers: {request: {set: {x-a: b}, remove: [x-b]}, response: {set: {x-r: q}}}
    - matches:
        - path: {prefix: /rewrite}
          headers: [{name: x-v, value: "1"}]
          query: [{name: q, value: "1"}]
      forward: {backends: [{upstream: up}], rewrite: {prefix: /x}}
    - matches: [{path: {regex: "/re/[a-z]+"}}]
      forward: {backends: [{upstream: up}], rewrite: {fullPath: /fixed}}
    - matches: [{path: {prefix: /}}]
      forward: {backends: [{upstream: up}], timeout: 2s}
"""
CONFIG += "".join(
    f"---\napiVersion: propylon.dev/v1\nkind: Upstream\nmetadata: {{name: {name}}}\n"
    f"spec: {{endpoints: [{{address: {address}, port: {port}}}]}}\n"
    for name, (address, port) in
    {"up": UPSTREAM, "dead": DEAD, "slow": SLOW, "blackhole": BLACKHOLE}.items()
)



class HarnessProblem(AssertionError):
    """The harness itself cannot go on (a callback loop that never settles)."""


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only in ``advance``; ``settle`` runs it until nothing
    is left to run at the current time."""

    def __init__(self) -> None:
        super().__init__()
        self.now = time.monotonic()

    def time(self) -> float:
        return self.now

    def catch_up(self) -> None:
        """Never behind the real clock: a new connection reads time.monotonic() once, and the
        sweeper's clock (``CLOCK``) follows this one."""
        self.now = max(self.now, time.monotonic())
        CLOCK.now = self.now

    def has_timers(self) -> bool:
        return any(not handle.cancelled() for handle in self._scheduled)  # type: ignore[attr-defined]

    def settle(self, limit: int = 500) -> None:
        for _ in range(limit):
            scheduled = self._scheduled  # type: ignore[attr-defined]
            if not self._ready and not (scheduled and scheduled[0].when() <= self.now):  # type: ignore[attr-defined]
                return
            self.call_soon(self.stop)
            self.run_forever()
        raise HarnessProblem("the event loop never settles")


# -- client side ----------------------------------------------------------------------------
class ClientTransport(asyncio.Transport):
    """The client's end: keeps every byte written, honours pause_reading like a socket."""

    def __init__(self, harness: FuzzGateway, peer: tuple[str, int]) -> None:
        super().__init__()
        self.harness = harness
        self.peer = peer
        self.protocol: ServerConnection | None = None
        self.output = bytearray()
        self.paused = False
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.lost = False

    def write(self, data: Any) -> None:
        if self.eof_written and not self.closed:
            self.harness.problem("write to the client after write_eof()")  # a socket raises
        if not self.closed:
            self.output += data

    def writelines(self, lines: Iterable[Any]) -> None:
        for line in lines:
            self.write(line)

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.harness.loop.call_soon(self._lost)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def _lost(self) -> None:
        if not self.lost and self.protocol is not None:
            self.lost = True
            self.protocol.connection_lost(None)

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_reading(self) -> bool:
        return not self.paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default


class ClientModel:
    """The client's byte stream as a lenient HTTP/1.1 server reads it (httptools, as the gateway
    does), read by read: the methods of its requests in order (a HEAD answer has no body) and
    how long the request head being read has been going on. Black-box on purpose: the
    gateway's own objects change, its contract does not."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.methods: list[bytes] = []
        self.in_head = False
        self.head_bytes = 0  # bytes of reads since the one the current head began in
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.in_head:
            self.head_bytes += len(data)
        while data and not self.broken:
            try:
                self.parser.feed_data(data)
                data = b""
            except httptools.HttpParserUpgrade as exc:  # HTTP again if the upgrade is refused
                data = data[exc.args[0]:]
                self.parser = httptools.HttpRequestParser(self)
                self.in_head = False
            except httptools.HttpParserError:
                self.broken = True
                self.in_head = False

    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.methods.append(self.parser.get_method())


class FuzzGateway:
    """``CONFIG`` compiled once, with in-memory upstream pools."""

    def __init__(self) -> None:
        self.loop = VirtualLoop()
        self.loop.set_exception_handler(self._loop_exception)
        registry = PoolRegistry(self.loop)
        self.pools = [FakePool(self, *UPSTREAM), FakePool(self, *DEAD), FakePool(self, *SLOW),
                      FakePool(self, *BLACKHOLE)]
        for pool in self.pools:
            registry.pools[(pool.address, pool.port, None, 0, False)] = pool
        loaded = load_text(CONFIG, "fuzz-gateway.yaml")
        assert loaded.ok, loaded.errors
        built = build_from_resources(loaded.resources)
        assert built.snapshot is not None and not built.warnings, (built.errors, built.warnings)
        runtime = compile_snapshot(built.snapshot, Services(registry, env=FilterEnv(self.loop)))
        ((key, gateway),) = runtime.listeners.items()
        self.gateway: GatewayRuntime = gateway
        self.listener = ListenerState(*key)
        self.listener.gateway = gateway
        self.listener.hosts = runtime.listener_hosts.get(key)
        self.listener.set_limits(runtime.listener_specs[key].limits)
        # the HTTP/1.1 codec only: an h2c preface would hand the connection to the HTTP/2
        # codec, whose bounds tests/integration/edge/test_http2.py covers
        self.listener.http2 = False
        # PROXY-prefixed mode (proxy_prefix.py): the same gateway behind a PROXY header,
        # required (False) or optional (True)
        self.proxy_listeners = proxy_listeners(self.listener, runtime.listener_specs[key].limits)
        self.worker = WorkerState(self.loop, None)
        self.problems: list[str] = []
        self.strict = os.environ.get("PROPYLON_FUZZ_KNOWN") == "fail"
        self.known_hits: Counter[str] = Counter()  # over the whole run
        self.clients: list[ClientConnection] = []
        self.upstreams: list[UpstreamTransport] = []
        self.requests: list[UpstreamRequest] = []
        self.body_upstream = 0  # request body bytes the upstreams received, mirrors left out
        self.answers: deque[tuple[UpstreamTransport, UpstreamRequest]] = deque()

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def known(self, issue: str) -> None:
        assert issue in KNOWN_ISSUES, issue
        self.known_hits[issue] += 1

    def ended_client(self, client: PoolClient) -> bool:
        """Whether ``client`` forwards for a request that was already answered and ended
        (strict: never, so that a known issue shows as what it does). Duck-typed: the pool
        client is the request's forwarder (or, before data plane v2, the exchange)."""
        if self.strict:
            return False
        request = getattr(client, "session", client)
        proto = getattr(request, "proto", None)
        if proto is None or not getattr(request, "response_started", False):
            return False
        return getattr(proto, "current", None) is not request

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        trace = "".join(traceback.format_exception(exc)) if exc is not None else ""
        self.problem(f"event loop: {context.get('message')}\n{trace}")

    # -- a fresh start for each input
    def reset(self) -> None:
        random.seed(0)  # mirror percentages, weighted picks
        self.problems = []
        self.clients = []
        self.upstreams = []
        self.requests = []
        self.body_upstream = 0
        self.answers.clear()
        self.worker.connections.clear()
        for pool in self.pools:
            pool.reset()
        for cluster in self.gateway.clusters.values():
            cluster.active_requests = 0
            cluster.retries_active = 0
            for endpoint in cluster.endpoints:
                endpoint.active = 0

    # -- upstream side
    def received(self, transport: UpstreamTransport, request: UpstreamRequest) -> None:
        self.requests.append(request)
        self.answers.append((transport, request))

    def deliver_answers(self) -> bool:
        """Send every queued upstream answer; True if there was any."""
        delivered = False
        while self.answers:
            transport, request = self.answers.popleft()
            delivered = True
            if transport.closed:
                continue
            kind, data = answer_for(request)
            if data:
                transport.conn.data_received(data)
            if kind in ("close", "reset"):
                transport.hang_up()
        return delivered

    def close_upstreams(self) -> None:
        """The upstreams close every connection still open (end of an input)."""
        for transport in self.upstreams:
            transport.hang_up()

    def settle(self) -> None:
        """Run the loop and the upstreams until neither has anything left to do now."""
        for _ in range(200):
            self.loop.settle()
            if not self.deliver_answers():
                return
        raise HarnessProblem("upstream answers never stop")

    def check_accounting(self) -> None:
        """Once every connection is gone, nothing may still be counted as in use."""
        for cluster in self.gateway.clusters.values():
            if cluster.active_requests or cluster.retries_active:
                self.problem(f"cluster {cluster.key}: active_requests={cluster.active_requests}"
                             f" retries_active={cluster.retries_active} after the end")
            for endpoint in cluster.endpoints:
                if endpoint.active:
                    self.problem(f"endpoint {endpoint.label}: active={endpoint.active} at the end")
        for pool in self.pools:
            if pool.total or pool.idle or pool.waiters:
                self.problem(f"pool {pool.port}: total={pool.total} idle={len(pool.idle)} "
                             f"waiters={len(pool.waiters)} after the end")
        if self.worker.connections:
            self.problem("a client connection is still registered with the worker")


class ClientConnection:
    """One client connection: ``feed`` reads, ``advance`` time, ``finish`` to wind down."""

    def __init__(self, gateway: FuzzGateway, peer: tuple[str, int],
                 listener: ListenerState | None = None) -> None:
        self.gw = gateway
        gateway.loop.catch_up()
        self.transport = ClientTransport(gateway, peer)
        self.proto = ServerConnection(gateway.worker, listener or gateway.listener)
        self.model = ClientModel()
        self.consumed = 0  # bytes the gateway read
        self.backlog_of: Callable[[int], int] | None = None  # structured mode: see check_bounds
        # PROXY-prefixed mode: bytes at the start that are a PROXY header, not HTTP (None: the
        # connection must be refused, so none of it is HTTP); and the bytes after which a
        # refused connection must no longer be read
        self.model_skip: int | None = 0
        self.refusal_bound: int | None = None
        self.transport.protocol = self.proto
        self.proto.connection_made(self.transport)
        gateway.clients.append(self)
        self.pending: deque[bytes] = deque()
        self.eof_wanted = False
        self.eof_sent = False

    def feed(self, reads: Iterable[bytes]) -> None:
        self.pending.extend(r for r in reads if r)
        self.pump()

    def pump(self) -> None:
        """Deliver pending reads while the gateway reads (the kernel holds them otherwise)."""
        transport = self.transport
        while self.pending and not transport.paused and not transport.closed:
            data = self.pending.popleft()
            self._model_feed(data)
            self.consumed += len(data)
            self.proto.data_received(data)
            self.gw.settle()
            self.check_bounds(len(data))
        if self.eof_wanted and not self.pending and not self.eof_sent and not transport.closed:
            self.eof_sent = True
            if not self.proto.eof_received():
                transport.close()
            self.gw.settle()

    def _model_feed(self, data: bytes) -> None:
        skip = self.model_skip
        if skip is None:
            return
        if skip:
            self.model_skip = max(0, skip - len(data))
            data = data[skip:]
        if data:
            self.model.feed(data)

    def send_eof(self) -> None:
        self.eof_wanted = True
        self.pump()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: timers fire, then the worker's sweeper runs once."""
        loop = self.gw.loop
        loop.now += seconds
        CLOCK.now = loop.now
        self.gw.settle()
        if not self.transport.closed:
            self.proto.check_timeouts(loop.now)
            self.gw.settle()
        self.pump()

    def finish(self) -> None:
        """Wind down as time passes: every timeout fires; the connection must end."""
        for step in (0.6, 0.6, 1.0, 3.0, 6.0, 11.0, 11.0, 60.0, 400.0):
            if self.transport.lost and not self.gw.loop.has_timers():
                break
            self.advance(step)
        if not self.transport.closed:
            self.gw.problem("the client connection is still open after every timeout")
            self.transport.close()
        self.gw.settle()
        self.gw.close_upstreams()
        self.gw.settle()
        self.gw.check_accounting()

    def check_bounds(self, read: int) -> None:
        """What the gateway holds is bounded, or it stops reading: an unfinished request head
        is answered (431, 408 ...) once it outgrows the listener's limits, and body bytes read
        but not passed upstream stay under ``MAX_BACKLOG`` (structured mode)."""
        transport = self.transport
        if transport.paused or transport.closed or transport.eof_written:
            return
        if self.refusal_bound is not None and self.consumed > self.refusal_bound + read:
            self.gw.problem(f"a connection the PROXY listener must refuse is still read after "
                            f"{self.consumed} bytes (bound {self.refusal_bound})")
        limit = self.gw.listener.max_head_bytes
        if self.model.in_head and self.model.head_bytes > limit + read:
            self.gw.problem(f"a request head of over {self.model.head_bytes} bytes is still "
                            f"being read (limit {limit})")
        if self.backlog_of is not None:
            backlog = self.backlog_of(self.consumed) - self.gw.body_upstream
            if backlog > MAX_BACKLOG:
                self.gw.problem(f"{backlog} body bytes read and not sent upstream, and reading "
                                "goes on")
