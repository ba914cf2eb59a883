"""A worker process: serves the listeners its supervisor lends it, obeys its supervisor.

The supervisor talks to the worker over a pipe with small tuples, each prefixed with a
request id (None for messages that need no answer); answers carry the id they answer:
- ``("listen", address, port)`` followed on the pipe by one descriptor (SCM_RIGHTS): the
  listening socket of that address for this worker's slot, owned by the supervisor (see
  ``listen_sockets.py``); ``("unlisten", address, port)`` takes it back. A listener accepts
  only on the socket lent now: one whose socket is taken back or replaced is closed, and the
  next install opens it on the lent one;
- ``("install_delta", delta_json)`` -> the same, from ``ir.delta.dumps_delta`` against the
  version this worker serves; a worker that serves another answers ``("nack", version,
  DELTA_REFUSED)`` and is sent the whole IR;
- ``("prepare", ir_json)``, only before the first install: compile a first part of the
  configuration without serving it, as the base of the install that follows, a delta against
  it (the supervisor translates the rest meanwhile: ``FileSource.start``; a larger part
  may follow first as ``("prepare_delta", delta_json)`` against it), or a connected
  proxy's first IR as the control plane sent it, while the supervisor checks it
  (``Supervisor.prepare_text``). Not answered: a worker that could not prepare it refuses
  the delta, and is sent the whole IR;
- ``("install", ir_json)`` -> compile and swap in; answers ``("ack", version, requests,
  errors_5xx)`` (the requests and 5xx answers served so far, over every route: what the
  version it replaced served, for a proxy's traffic per version) or ``("nack", version,
  error)`` (the previous configuration keeps serving);
- ``("dns", [(query, answer), ...])``: DNS answers (``runtime/discovery.py``) for the
  clusters whose endpoints are names; sent before an install and whenever one changes;
- ``("stats",)`` -> answers ``("stats", metrics_snapshot)``; ``("health_stats",)`` ->
  ``("health_stats", {endpoints, panic, upstreams, totals})`` (a connected proxy's health
  report);
- ``("reopen_logs",)``: reopen the access log file (the supervisor's SIGUSR1, after a
  rotation: told through the pipe, since a worker signalled before it handles SIGUSR1, while
  it starts, would be killed by the signal);
- ``("drain", grace_seconds)`` -> stop accepting, finish in-flight requests, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import Any

from propylon import ir
from propylon.filters.base import FilterEnv
from propylon.ir import ListenerTLSIR
from propylon.ir.delta import DeltaBaseMismatch, loads_delta
from propylon.observability.access_log import AccessLog
from propylon.observability.logs import configure_logging
from propylon.observability.metrics import MetricsRegistry
from propylon.proxy.acceptor import Acceptor
from propylon.proxy.clock import CLOCK
from propylon.proxy.h1.server import ServerConnection
from propylon.proxy.pool import PoolRegistry
from propylon.proxy.tls import ServerTLS, listener_tls
from propylon.proxy.worker_entry import DELTA_REFUSED
from propylon.proxy.worker_state import ListenerState, WorkerState
from propylon.runtime.compile import Services, compile_snapshot, compiling, refresh_cluster
from propylon.runtime.compiled import Cluster, Runtime
from propylon.runtime.discovery import Answer, DnsQuery
from propylon.runtime.gc_pause import gc_paused
from propylon.runtime.heap_trim import settle_heap

log = logging.getLogger("propylon.worker")


_SWEEP_INTERVAL = 0.5
GC_THRESHOLDS = (50_000, 20, 100)


class Worker:
    def __init__(self, loop: asyncio.AbstractEventLoop, access_log: str,
                 access_log_format: str = "json") -> None:
        self.loop = loop
        sink = None if access_log == "off" else AccessLog(loop, access_log, access_log_format)
        self.state = WorkerState(loop, sink)
        # what survives configuration versions: pools, counters, filter objects, health
        self.pools = PoolRegistry(loop)
        self.services = Services(self.pools, MetricsRegistry(), FilterEnv(loop))
        self.metrics = self.services.metrics
        self.runtime: Runtime | None = None
        self.snapshot: ir.SnapshotIR | None = None  # what runtime was compiled from
        # compiled before the first install, not served: the base of that install's delta
        self.prepared: ir.SnapshotIR | None = None
        self.listeners: dict[tuple[str, int], ListenerState] = {}
        # the supervisor's listening sockets lent to this worker; an acceptor closes a copy
        self.lent: dict[tuple[str, int], socket.socket] = {}
        self.stopped = asyncio.Event()

    # -- configuration -------------------------------------------------------------------
    def prepare(self, snapshot: ir.SnapshotIR) -> None:
        """Compile ``snapshot`` before anything is served, without serving it: what the
        first install has in common with it is then kept (``compile_snapshot``'s memos)."""
        if self.snapshot is not None:
            return  # only the first install is prepared: the served one is the base after
        compile_snapshot(snapshot, self.services)
        self.prepared = snapshot
        log.debug("compiled a first part of the configuration (%s)", snapshot.version)

    async def install(self, snapshot: ir.SnapshotIR) -> None:
        """Compile and swap in ``snapshot``; raises (leaving the old one) on any problem."""
        # what the compilation changes in objects the old runtime shares with it is done
        # when the block ends, once nothing below can refuse the snapshot
        with compiling(snapshot, self.services) as runtime:
            tls_contexts = {  # built before anything changes: bad certificates refuse it all
                key: listener_tls(runtime.listeners[key].key, spec, self._server_tls)
                for key, spec in runtime.listener_specs.items()}
            wanted = set(runtime.listeners)
            new: dict[tuple[str, int], ListenerState] = {}
            try:
                for key in wanted - set(self.listeners):
                    new[key] = self._open_listener(*key)
            except OSError:
                for listener in new.values():
                    self._close_listener(listener)
                raise
        self.prepared = None
        for key in set(self.listeners) - wanted:
            self._close_listener(self.listeners.pop(key))
        self.listeners.update(new)
        for key, listener in self.listeners.items():
            listener.gateway = runtime.listeners.get(key)
            listener.hosts = runtime.listener_hosts.get(key)
            listener.set_limits(runtime.listener_specs[key].limits)
            listener.set_path_normalization(runtime.listener_specs[key].path_normalization)
            listener.set_proxy_protocol(runtime.listener_specs[key].proxy_protocol)
            listener.http2 = runtime.listener_specs[key].http2
            listener.set_tls(tls_contexts[key])
        for listener in new.values():
            assert listener.acceptor is not None
            listener.acceptor.start()
        first = self.snapshot is None
        self.runtime = runtime
        self.snapshot = snapshot
        self._retain_pools()
        if first:  # once the text it came in is freed (the message handled)
            asyncio.get_running_loop().call_soon(settle_heap)

    def _retain_pools(self) -> None:
        """Close the pools no endpoint of the runtime uses (their busy connections finish)."""
        used = {id(ep.pool) for cluster in self.clusters() for ep in cluster.endpoints}
        self.pools.retain_only(
            {key for key, pool in self.pools.pools.items() if id(pool) in used})

    def _server_tls(self, spec: ListenerTLSIR, http2: bool) -> ServerTLS:
        """Reuse the contexts of an unchanged TLS configuration (no reload, no file reads)."""
        for listener in self.listeners.values():
            tls = listener.tls
            if tls is not None and tls.spec == spec and tls.http2 == http2:
                return tls
        return ServerTLS(spec, http2)

    def lend(self, key: tuple[str, int], sock: socket.socket | None) -> None:
        """The supervisor lends ``sock`` for ``key`` (None: takes it back).

        A listener accepts only on the socket lent now: the supervisor closes a socket it
        takes back (a refused install's port, before binding it again for a retry), and a
        copy still accepted on here would keep it listening in the SO_REUSEPORT group beside
        the new one, whose queued connections nobody would accept (``listen_sockets.py``).
        The next install opens the listener again on the lent socket."""
        old = self.lent.pop(key, None)
        if old is not None:
            old.close()
        if sock is not None:
            self.lent[key] = sock
        listener = self.listeners.pop(key, None)
        if listener is not None:
            self._close_listener(listener)

    def _open_listener(self, address: str, port: int) -> ListenerState:
        lent = self.lent.get((address, port))
        if lent is None:
            raise OSError(f"the supervisor lent no socket for {address}:{port}")
        sock = lent.dup()
        sock.setblocking(False)
        listener = ListenerState(address, port)
        state = self.state
        listener.acceptor = Acceptor(self.loop, sock, lambda: ServerConnection(state, listener))
        return listener  # accepting starts once install() has configured it

    @staticmethod
    def _close_listener(listener: ListenerState) -> None:
        if listener.acceptor is not None:
            listener.acceptor.close()

    # -- health --------------------------------------------------------------------------
    def clusters(self) -> list[Cluster]:
        runtime = self.runtime
        if runtime is None:
            return []
        return [c for gw in runtime.gateways.values() for c in gw.clusters.values()]

    def apply_verdicts(self, verdicts: list[tuple[str, str, bool]]) -> None:
        """Active-check verdicts from the supervisor: rebuild the affected balancers."""
        changed = {up for up, endpoint, ok in verdicts
                   if self.services.health.set_verdict(up, endpoint, ok)}
        now = time.monotonic()
        for cluster in self.clusters():
            if cluster.key in changed:
                cluster.rebalance(now)

    def apply_answers(self, answers: list[tuple[DnsQuery, Answer]]) -> None:
        """DNS answers from the supervisor: rebuild the clusters whose names changed."""
        held = self.services.answers
        changed = {query for query, answer in answers if held.get(query) != answer}
        held.update(answers)
        if not changed:
            return
        for cluster in self.clusters():
            if cluster.queries & changed:
                refresh_cluster(cluster, self.services)
        self._retain_pools()

    def stats(self) -> dict[str, Any]:
        """Counters plus each endpoint's health as this worker sees it."""
        return {
            **self.metrics.snapshot(),
            **self.load(),
            "gc": gc.get_stats(),
            "endpoints": self._endpoints(),
            "panic": self._panic(),
            "proxy_protocol": [
                [f"{listener.address}:{listener.port}", reason, count]
                for listener in self.listeners.values()
                for reason, count in listener.proxy_errors.items()
            ],
        }

    def health(self) -> dict[str, Any]:
        """What a connected proxy reports every few seconds (``agent.report_health``): the
        endpoints' health, the upstreams' counters and panic, and request totals, without
        every route's counters (at 1,000 routes those were most of the report's cost)."""
        return {"endpoints": self._endpoints(), "panic": self._panic(),
                "upstreams": self.metrics.upstreams_snapshot(),
                "totals": self.metrics.request_totals()}

    def _endpoints(self) -> list[list[Any]]:
        now = time.monotonic()
        endpoints = {
            (cluster.key, ep.label): {
                "healthy": ep.health.healthy,
                "ejected": ep.health.ejected_until > now,
                "ejections": ep.health.ejections,
                "active": ep.active,
            }
            for cluster in self.clusters() for ep in cluster.endpoints
        }
        return [[list(key), value] for key, value in endpoints.items()]

    def _panic(self) -> list[str]:
        return sorted({c.key for c in self.clusters() if c.panic})

    def load(self) -> dict[str, Any]:
        """Gauges counted at scrape time, so requests pay nothing for them: open client
        connections and requests in flight per listener, requests in flight per upstream."""
        connections: dict[str, int] = {}
        in_flight: dict[str, int] = {}
        for proto in self.state.connections:
            listener = proto.listener
            name = f"{listener.address}:{listener.port}"
            connections[name] = connections.get(name, 0) + 1
            busy = proto.requests_in_flight()
            in_flight[name] = in_flight.get(name, 0) + busy
        for listener in self.listeners.values():  # a listener without connections shows 0
            name = f"{listener.address}:{listener.port}"
            connections.setdefault(name, 0)
            in_flight.setdefault(name, 0)
        runtime = self.runtime
        return {
            "connections": sorted(connections.items()),
            "in_flight": sorted(in_flight.items()),
            "upstream_active": [
                [[gateway.key, cluster.key], cluster.active_requests]
                for gateway in (runtime.gateways.values() if runtime is not None else ())
                for cluster in gateway.clusters.values()
            ],
        }

    # -- housekeeping --------------------------------------------------------------------
    async def sweep_forever(self) -> None:
        """Idle upstream connections and every client connection's timeouts."""
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            self.pools.close_expired()
            for listener in self.listeners.values():
                if listener.tls is not None and listener.tls.reload_if_changed():
                    listener.set_tls(listener.tls)
            now = CLOCK.tick()
            for proto in list(self.state.connections):
                proto.check_timeouts(now)
            for cluster in self.clusters():
                if cluster.recheck_at <= now:
                    cluster.rebalance(now)  # an ejection ended

    async def drain(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace``), then stop."""
        self.state.draining = True
        for listener in self.listeners.values():
            self._close_listener(listener)
        for key in list(self.lent):  # the port refuses once no process holds it any more
            self.lend(key, None)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for proto in list(self.state.connections):
                proto.close_if_idle()
            if not self.state.connections:
                break
            await asyncio.sleep(0.05)
        for proto in list(self.state.connections):
            proto.abort()
        self.pools.close_idle()
        if self.state.access_log is not None:
            self.state.access_log.close()
        self.stopped.set()


class WorkerChannel:
    """The worker's end of the supervisor pipe, read without blocking the event loop."""

    def __init__(self, worker: Worker, conn: Connection) -> None:
        self.worker = worker
        self.conn = conn
        self.tasks: set[asyncio.Future[None]] = set()

    def start(self) -> None:
        self.worker.loop.add_reader(self.conn.fileno(), self._readable)
        # uvloop makes a watched fd non-blocking, but Connection.recv() needs a whole
        # message: a large IR arriving in pieces would otherwise read as a broken pipe.
        os.set_blocking(self.conn.fileno(), True)

    def _readable(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            # the supervisor is gone: drain rather than serve unmanaged forever
            self.worker.loop.remove_reader(self.conn.fileno())
            self._spawn(self.worker.drain(5.0))
            return
        # Lending is applied as it is read, like the descriptor that follows a listen, so the
        # lent sockets change in the order the supervisor sent (a task could run late).
        if message[1] == "listen":  # the descriptor follows at once: read it before anything
            fd = recv_handle(self.conn)
            self.worker.lend((message[2], message[3]), socket.socket(fileno=fd))
            return
        if message[1] == "unlisten":
            self.worker.lend((message[2], message[3]), None)
            return
        self._spawn(self._handle(message[0], message[1:]))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, request_id: int | None, message: tuple[Any, ...]) -> None:
        """One supervisor message; questions (with an id) get an answer naming that id."""
        kind = message[0]
        if kind in ("install", "install_delta"):
            version = "?"
            try:
                held = self.worker.snapshot or self.worker.prepared
                if kind == "install_delta" and held is None:
                    raise DeltaBaseMismatch("no configuration installed")
                with gc_paused():
                    snapshot = (ir.loads(message[1]) if kind == "install"
                                else loads_delta(message[1], held))  # type: ignore[arg-type]
                version = snapshot.version
            except DeltaBaseMismatch:
                self._send(request_id, ("nack", version, DELTA_REFUSED))
                return
            except Exception as exc:
                log.error("configuration refused: %s", exc)
                self._send(request_id, ("nack", version, str(exc)))
                return
            totals = self.worker.metrics.request_totals()  # served by the version replaced
            try:
                await self.worker.install(snapshot)
            except Exception as exc:  # any failure keeps the old configuration serving
                log.error("configuration %s refused: %s", version, exc)
                self._send(request_id, ("nack", version, str(exc)))
            else:
                self._send(request_id, ("ack", version, *totals))
        elif kind in ("prepare", "prepare_delta"):
            try:
                with gc_paused():
                    held = self.worker.prepared
                    if kind == "prepare":
                        part = ir.loads(message[1])
                    elif held is None:
                        raise DeltaBaseMismatch("no first part compiled")
                    else:
                        part = loads_delta(message[1], held)
                    self.worker.prepare(part)
            except Exception as exc:  # the install will be sent whole
                log.warning("could not compile a first part of the configuration ahead (it "
                            "will be compiled whole): %s", exc)
        elif kind == "stats":
            self._send(request_id, ("stats", self.worker.stats()))
        elif kind == "health_stats":
            self._send(request_id, ("health_stats", self.worker.health()))
        elif kind == "health":
            self.worker.apply_verdicts(message[1])
        elif kind == "dns":
            self.worker.apply_answers(message[1])
        elif kind == "reopen_logs":
            if self.worker.state.access_log is not None:
                self.worker.state.access_log.reopen()
        elif kind == "drain":
            await self.worker.drain(float(message[1]))

    def _send(self, request_id: int | None, answer: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):
            self.conn.send((request_id, *answer))


def worker_main(conn: Connection, access_log: str, log_level: str, log_format: str = "text",
                access_log_format: str = "json") -> None:
    """Entry point of a worker process (spawned by the supervisor)."""
    import uvloop

    configure_logging(log_level, log_format, f"worker[{os.getpid()}]")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Requests allocate many short-lived containers that reference counting frees; the cyclic
    # collector scanning them every 700 allocations costs more than the rare cycles it finds.
    # The heap built at start-up (modules, compiled configuration) is frozen out of its scans.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    uvloop.run(_serve(conn, access_log, access_log_format))


async def _serve(conn: Connection, access_log: str, access_log_format: str) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(loop, access_log, access_log_format)
    if worker.state.access_log is not None:
        loop.add_signal_handler(signal.SIGUSR1, worker.state.access_log.reopen)
    WorkerChannel(worker, conn).start()
    sweeper = asyncio.ensure_future(worker.sweep_forever())
    await worker.stopped.wait()
    sweeper.cancel()
