"""One request/response exchange, from the parsed request head to the last response byte.

Phases (Pingora's names in brackets), all driven by callbacks, no task per request:
1. ``begin``: route the request [request_filter]: no match -> 404; filters' ``on_request`` may
   answer locally; redirect / direct response answer locally; forward picks a backend and an
   endpoint [upstream_peer] and asks its pool for a connection.
2. ``on_upstream_connected``: filters' ``on_upstream_request``, the request head is serialised
   from parsed fields, buffered body chunks follow; later chunks stream straight through.
3. ``on_response_head``: filters' ``on_response`` [response_filter], hop-by-hop fields dropped,
   framing chosen for this client; body chunks stream through with backpressure both ways.
4. ``finish``: the upstream connection goes back to its pool when reusable; metrics, access
   log and filters' ``on_log`` [logging]; the downstream connection moves to its next request.

Invariants: at most one upstream connection per exchange; a response head is written at most
once (``response_started``); after it, errors can only abort the client connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from propylon.filters.base import LocalResponse
from propylon.observability.metrics import LATENCY_BOUNDS, STATUS_CLASS
from propylon.proxy.clock import CLOCK
from propylon.proxy.forwarded import forwarding_headers, real_client_ip
from propylon.proxy.hostport import is_ip_literal
from propylon.proxy.http11 import (
    _STATUS_LINES,
    HOP_BY_HOP,
    Headers,
    connection_tokens,
    serialize_headers,
    simple_response,
    status_line,
)
from propylon.proxy.mirror import MirrorRequest
from propylon.proxy.rewrite import redirect_location, rewrite_path
from propylon.runtime.compiled import FORWARD, REDIRECT, CompiledRoute
from propylon.runtime.retry import CONNECT_FAILURE, RESET, STATUS, TIMEOUT

if TYPE_CHECKING:
    from propylon.proxy.downstream import DownstreamProtocol
    from propylon.proxy.upstream import UpstreamConnection
    from propylon.runtime.compiled import Cluster, ClusterEndpoint, GatewayRuntime

log = logging.getLogger("propylon.proxy")

_perf_counter = time.perf_counter
COARSE_DEADLINE = 5.0  # route timeouts at least this long are checked by the sweeper
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
_MAX_PENDING_BODY = 256 * 1024  # buffered before the upstream is ready; reading pauses above
_MAX_REPLAY_BODY = 1024 * 1024  # bodies kept for retries and mirrors; larger ones are not
# Bodies of idempotent requests kept (on routes without retries or mirror) for the one free
# retry after a stale pooled connection; larger ones get 502 when they meet one.
_MAX_STALE_REPLAY_BODY = 64 * 1024
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class Exchange:
    __slots__ = (
        "aborted",
        "body_done",
        "bytes_out",
        "chunked_out",
        "client_ip",
        "cluster",
        "conn",
        "conn_header",
        "deadline",
        "endpoint",
        "endpoint_label",
        "expect_continue",
        "forwarded",
        "framing",
        "gateway",
        "has_body",
        "head_bytes",
        "head_only",
        "header_bytes",
        "host",
        "host_count",
        "host_value",
        "http11",
        "in_flight",
        "keep_alive",
        "method",
        "mirror_to",
        "path",
        "pending",
        "pending_size",
        "proto",
        "query",
        "replay",
        "replay_max",
        "replay_size",
        "req_chunked",
        "request_headers",
        "response_started",
        "retried",
        "retry_timer",
        "retrying",
        "route",
        "start",
        "state",
        "status",
        "te_codings",
        "timer",
        "tries",
        "try_timer",
        "upgrade",
        "upstream_error",
        "url",
        "waiting_filter",
    )

    # Set before any use, so not in __init__ (one store fewer each, per request): the target
    # and Host by the downstream parser, the rest when the exchange begins or forwards.
    path: bytes
    query: bytes
    host: str
    gateway: GatewayRuntime
    start: float
    head_only: bool
    head_bytes: bytes  # the upstream request head, built once

    def __init__(self, proto: DownstreamProtocol) -> None:
        self.proto = proto
        # request head, filled by the downstream parser callbacks
        self.url = b""
        self.method = b""
        self.host_count = 0
        self.host_value = b""
        self.http11 = True
        self.keep_alive = True
        self.request_headers: Headers = []
        self.header_bytes = 0
        self.forwarded: dict[bytes, bytes] | None = None
        self.conn_header: bytes | None = None
        self.expect_continue = False
        self.req_chunked = False
        self.framing = 0  # which framing fields the request carried (downstream.check_framing)
        self.te_codings: bytes | None = None  # codings applied before chunked, forwarded as is
        self.upgrade: bytes | None = None  # protocol asked for with Upgrade + Connection: upgrade
        self.has_body = False
        self.client_ip = proto.peer_ip
        # request body
        self.body_done = False
        self.pending: list[bytes] | None = None
        self.pending_size = 0
        # routing and upstream
        self.route: CompiledRoute | None = None
        self.cluster: Cluster | None = None
        self.endpoint: ClusterEndpoint | None = None
        self.endpoint_label: str | None = None
        self.conn: UpstreamConnection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0  # a long route timeout, enforced by the worker's sweeper
        self.upstream_error = ""
        self.retried = False  # the one free retry after a stale pooled connection was used
        self.tries = 0
        self.in_flight = False  # counted in its cluster's active requests
        self.try_timer: asyncio.TimerHandle | None = None
        self.retry_timer: asyncio.TimerHandle | None = None
        self.retrying = False  # waiting for the next try
        self.replay: list[bytes] | None = None  # body kept for retries and the mirror
        self.replay_size = 0
        self.mirror_to: Cluster | None = None  # mirror still to be sent (body incomplete)
        # response
        self.status = 0
        self.response_started = False
        self.chunked_out = False
        self.bytes_out = 0
        self.aborted = False
        # per-request data filters share between their phases (created on first use)
        self.state: dict[str, Any] | None = None
        self.waiting_filter: asyncio.Future[LocalResponse | None] | None = None

    # -- RequestView (for the router and ring-hash keys) -----------------------------------
    def header(self, name: str) -> str | None:
        key = name.encode("latin-1")
        for n, v in self.request_headers:
            if n == key:
                return v.decode("latin-1")
        return None

    def query_param(self, name: str) -> str | None:
        from urllib.parse import parse_qsl

        for k, v in parse_qsl(self.query.decode("latin-1"), keep_blank_values=True):
            if k == name:
                return v
        return None

    # -- phase 1: routing ---------------------------------------------------------------
    def begin(self) -> None:
        self.start = _perf_counter()
        proto = self.proto
        listener = proto.listener
        self.head_only = self.method == b"HEAD"
        gateway = listener.gateway
        if gateway is None:
            self.send_error(503, b"no configuration installed\n")
            return
        self.gateway = gateway
        if proto.peer_trusted and self.forwarded:
            self.client_ip = real_client_ip(self.forwarded, proto.peer_ip, gateway.is_trusted)
        names = proto.tls_names
        if names is not None and self.host not in names and not is_ip_literal(self.host):
            self.send_error(421, b"this connection's certificate does not cover the host\n")
            return
        hosts = listener.hosts
        if hosts is not None and self.host not in hosts:
            route = None  # the listener does not serve this host
        else:
            route = gateway.router.match(
                self.host, self.method.decode("latin-1"), self.path.decode("latin-1"), self
            )
        if route is None:
            route = gateway.not_found
        self.route = route
        if route.chain.on_request:
            self.run_request_filters(route, 0)
        elif route.kind == FORWARD:
            self.forward(route)
        else:
            self.dispatch(route)

    def run_request_filters(self, route: CompiledRoute, start: int) -> None:
        """Run ``on_request`` filters from ``start``; an awaitable answer suspends the chain
        until it resolves, then the chain resumes with the next filter."""
        phases = route.chain.on_request
        for index in range(start, len(phases)):
            try:
                answer = phases[index](self)
            except Exception:
                log.exception("filter failed in on_request on %s", route.rule_id)
                self.send_error(500, b"internal error\n")
                return
            if answer is None:
                continue
            if isinstance(answer, LocalResponse):
                self.send_local(answer.status, answer.body, answer.headers, answer.content_type)
                return
            future = asyncio.ensure_future(answer)
            self.waiting_filter = future
            future.add_done_callback(functools.partial(self._filter_resolved, route, index))
            return
        self.dispatch(route)

    def _filter_resolved(
        self, route: CompiledRoute, index: int, future: asyncio.Future[LocalResponse | None]
    ) -> None:
        self.waiting_filter = None
        if self.aborted or future.cancelled() or self.response_started:
            return  # the exchange ended while the filter was waiting
        error = future.exception()
        if error is not None:
            log.error("filter failed in on_request on %s: %r", route.rule_id, error)
            self.send_error(500, b"internal error\n")
            return
        answer = future.result()
        if answer is not None:
            self.send_local(answer.status, answer.body, answer.headers, answer.content_type)
        else:
            self.run_request_filters(route, index + 1)

    def dispatch(self, route: CompiledRoute) -> None:
        """The rule's action, once every ``on_request`` filter let the request through."""
        kind = route.kind
        if kind == FORWARD:
            self.forward(route)
        elif kind == REDIRECT:
            self.send_redirect(route)
        else:
            self.send_local(route.direct_status, route.direct_body, None,
                            route.direct_content_type)

    def forward(self, route: CompiledRoute) -> None:
        cluster = route.single_cluster or route.backends.pick()
        if cluster is None:
            self.send_error(503, b"no backend available\n")
            return
        if cluster.breaker is not None:
            overloaded = cluster.overloaded()
            if overloaded is not None:
                cluster.stats.overflows += 1
                self.send_local(503, b"upstream overloaded\n",
                                [(b"x-propylon-overloaded", overloaded)])
                return
        self.cluster = cluster
        cluster.active_requests += 1
        self.in_flight = True
        if self.has_body:
            if route.retry is not None or route.mirror is not None:
                self.keep_replay(_MAX_REPLAY_BODY)
            elif self.method in IDEMPOTENT:
                self.keep_replay(_MAX_STALE_REPLAY_BODY)
        if route.chain.on_upstream_request:
            for phase in route.chain.on_upstream_request:
                phase(self)
        self.head_bytes = self.upstream_head(route)
        if self.expect_continue:
            self.proto.write(CONTINUE_100)
        timeout = route.timeout
        if timeout:
            if timeout >= COARSE_DEADLINE:
                # checked by the worker's sweeper (about twice a second): a timer per request
                # costs more than the precision is worth for long deadlines
                self.deadline = CLOCK.now + timeout
            else:
                self.timer = self.proto.loop.call_later(timeout, self.on_timeout)
        if route.mirror is not None and random.random() * 100 < route.mirror_percent:
            self.mirror_to = route.mirror
            self.start_mirror()
        self.try_endpoint(None)

    def keep_replay(self, limit: int) -> None:
        """Keep the body (what arrived so far included) so that it can be sent again."""
        self.replay = [b"".join(self.pending)] if self.pending else []
        self.replay_size = self.pending_size
        self.replay_max = limit
        if self.replay_size > limit:
            self.replay = None

    def try_endpoint(self, previous: ClusterEndpoint | None, fresh: bool = False) -> None:
        """Send the request to an endpoint, a different one than ``previous`` if possible;
        on a new connection when ``fresh`` (the previous try met a stale pooled one)."""
        self.retry_timer = None
        cluster = self.cluster
        route = self.route
        assert cluster is not None and route is not None
        key = self.hash_key(cluster) if cluster.hash_kind else None
        endpoint = cluster.balancer.pick(key)
        if previous is not None and endpoint is previous:
            endpoint = cluster.another_endpoint(previous) or endpoint
        if endpoint is None:
            self.send_error(503, b"no healthy upstream endpoint\n")
            return
        self.endpoint = endpoint
        self.endpoint_label = endpoint.label
        endpoint.active += 1
        self.tries += 1
        retry = route.retry
        if retry is not None and retry.per_try_timeout:
            self.try_timer = self.proto.loop.call_later(retry.per_try_timeout, self.on_try_timeout)
        pool = endpoint.pool
        may_connect = True
        if cluster.breaker is not None:
            may_connect = cluster.may_open_connection()
            if pool.would_wait(may_connect) and not cluster.may_queue():
                cluster.stats.overflows += 1
                self.send_local(503, b"upstream overloaded\n",
                                [(b"x-propylon-overloaded", b"max_pending_requests")])
                return
        if fresh:
            pool.connect_new(self)
            return
        conn = pool.acquire(self, may_connect)
        if conn is not None:
            self.on_upstream_connected(conn)

    def start_mirror(self) -> None:
        """Copy the request to the mirror upstream once its body (if any) is complete."""
        mirror = self.mirror_to
        if mirror is None or not self.body_done:
            return
        self.mirror_to = None
        if self.has_body and self.replay is None:
            return  # the body outgrew the replay limit: no copy
        body = list(self.replay or ())
        if self.req_chunked:
            body.append(b"0\r\n\r\n")
        MirrorRequest(self.head_bytes, body).send(
            mirror, self.hash_key(mirror) if mirror.hash_kind else None
        )

    def retry_or_fail(self, condition: str, status: int = 0, fresh: bool = False) -> bool:
        """Schedule another try if the route allows one for this failure; True if it did.
        ``fresh``: the next try opens a new connection."""
        route, cluster, endpoint = self.route, self.cluster, self.endpoint
        if route is None or cluster is None:
            return False
        retry = route.retry
        if (retry is None or self.response_started or self.tries > retry.attempts
                or not retry.retries_on(condition, status)
                or (self.has_body and (self.replay is None or not self.body_done))):
            return False
        if not retry.budget_allows(cluster.retries_active, cluster.active_requests):
            cluster.stats.retries_denied += 1
            return False
        cluster.stats.retries += 1
        self.end_try()
        self.pending = list(self.replay) if self.replay else None
        if not self.retrying:  # an exchange counts once in the budget, however many retries
            self.retrying = True
            cluster.retries_active += 1
        self.retry_timer = self.proto.loop.call_later(
            retry.backoff(self.tries), self.try_endpoint, endpoint, fresh
        )
        return True

    def end_try(self) -> None:
        """Forget the current try's connection, timer and endpoint load."""
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.active -= 1

    def hash_key(self, cluster: Cluster) -> str | None:
        if cluster.hash_kind == "client_ip":
            return self.client_ip
        if cluster.hash_kind == "header":
            return self.header(cluster.hash_name)
        cookies = self.header("cookie")
        if cookies:
            for item in cookies.split(";"):
                name, _, value = item.strip().partition("=")
                if name == cluster.hash_name:
                    return value
        return None

    # -- phase 2: the upstream request ----------------------------------------------------
    def on_upstream_connected(self, conn: UpstreamConnection) -> None:
        if self.aborted:
            conn.pool.release(conn)
            return
        self.conn = conn
        conn.attach(self, self.proto, self.head_only)
        head = self.head_bytes
        assert head is not None
        transport = conn.transport
        assert transport is not None
        if self.pending:
            transport.writelines([head, *self.pending])
            self.pending = None
            self.pending_size = 0
            self.proto.resume_reading_for_body()
        elif self.body_done and not self.req_chunked:
            # the whole request: nothing else is written to this connection before the
            # answer, so the head can wait for the end of the loop's turn (proxy/batch.py)
            self.proto.batch.write(transport, head)
        else:
            transport.write(head)
        if self.body_done and self.req_chunked:
            transport.write(b"0\r\n\r\n")
        if self.proto.writing_paused:
            transport.pause_reading()

    def upstream_head(self, route: CompiledRoute) -> bytes:
        if route.prefix_from is None and route.replace_path is None:
            path = self.path
        else:
            path = rewrite_path(self.path, route.prefix_from, route.prefix_to, route.replace_path)
        target = path + b"?" + self.query if self.query else path
        headers = self.request_headers
        if self.conn_header is not None:
            named = connection_tokens(self.conn_header) - {b"close", b"keep-alive"}
            if named:
                headers = [h for h in headers if h[0] not in named]
        if not self.req_chunked:
            framing = b""
        elif self.te_codings:
            framing = b"transfer-encoding: " + self.te_codings + b", chunked\r\n"
        else:
            framing = b"transfer-encoding: chunked\r\n"
        if self.proto.client_cert is not None:
            framing += b"x-forwarded-client-cert: " + self.proto.client_cert + b"\r\n"
        if self.upgrade is not None:
            framing += b"connection: upgrade\r\nupgrade: " + self.upgrade + b"\r\n"
        proto = self.proto
        if not proto.peer_trusted and proto.forwarding_host == self.host_value:
            forwarding = proto.forwarding_fields  # the connection's cached fields
        else:
            forwarding = self.forwarding_fields()
        return b"".join((
            self.method, b" ", target, b" HTTP/1.1\r\n", serialize_headers(headers),
            forwarding, framing, b"\r\n",
        ))

    def forwarding_fields(self) -> bytes:
        """X-Forwarded-* and Forwarded, serialised. For a peer that is not a trusted proxy
        they depend only on the peer and the Host, so the connection keeps the last ones."""
        proto = self.proto
        host = self.host_value
        if not proto.peer_trusted and proto.forwarding_host == host:
            return proto.forwarding_fields
        gateway = self.gateway
        assert gateway is not None
        _, fields = forwarding_headers(
            proto.peer_ip, proto.peer_trusted, self.forwarded or {},
            proto.listener.scheme, host, gateway.is_trusted,
        )
        serialized = serialize_headers(fields)
        if not proto.peer_trusted:
            proto.forwarding_host, proto.forwarding_fields = host, serialized
        return serialized

    def host_header(self) -> bytes:
        """The Host the client sent (or the authority of an absolute-form target)."""
        return self.host_value

    def request_body(self, chunk: bytes) -> None:
        route = self.route
        if route is not None and route.chain.on_request_body:
            for phase in route.chain.on_request_body:
                answer = phase(self, chunk, False)
                if isinstance(answer, LocalResponse):
                    self.stop_request(answer)
                    return
        replay = self.replay
        if replay is not None:
            self.replay_size += len(chunk)
            if self.replay_size > self.replay_max:
                self.replay = None  # too large to keep: this request will not be retried
            elif self.req_chunked:
                replay.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                replay.append(chunk)
        conn = self.conn
        if conn is not None and conn.transport is not None:
            if self.req_chunked:
                conn.transport.writelines([b"%x\r\n" % len(chunk), chunk, b"\r\n"])
            else:
                conn.transport.write(chunk)
            return
        if self.route is not None and self.route.kind != FORWARD:
            return  # answered locally: the body is read and dropped
        if self.retrying:
            return  # the next try sends the replay copy
        framed = [b"%x\r\n" % len(chunk), chunk, b"\r\n"] if self.req_chunked else [chunk]
        if self.pending is None:
            self.pending = framed
        else:
            self.pending.extend(framed)
        self.pending_size += len(chunk)
        if self.pending_size > _MAX_PENDING_BODY:
            self.proto.pause_reading_for_body()

    def stop_request(self, answer: LocalResponse) -> None:
        """A body filter refused the request mid-body: drop the upstream side and answer."""
        self.keep_alive = False
        if self.aborted or self.route is None or self.route.kind != FORWARD:
            return
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        self.end_try()
        self.pending = None
        if self.response_started:
            self.proto.abort()
            self.finish()
        else:
            self.send_local(answer.status, answer.body, answer.headers, answer.content_type)

    def request_complete(self) -> None:
        self.body_done = True
        if self.mirror_to is not None:
            self.start_mirror()
        conn = self.conn
        if conn is not None and conn.transport is not None and self.req_chunked:
            conn.transport.write(b"0\r\n\r\n")
        # otherwise on_upstream_connected writes the terminator after the pending chunks

    # -- phase 3: the response ----------------------------------------------------------
    def on_upgraded_head(self, headers: Headers) -> None:
        """The upstream answered 101 to an upgrade request."""
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        self.status = 101
        self.switching_protocols(headers)

    def on_response_head(self, status: int, out: Headers, length: bytes | None) -> None:
        """The upstream's answer head, hop-by-hop fields already removed (``out``)."""
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        route = self.route
        assert route is not None  # only a forwarded request gets an upstream answer
        cluster = self.cluster
        if cluster is not None and cluster.ejection is not None:
            self.record_outcome(status < 500)
        retry = route.retry
        if retry is not None and retry.retries_status(status) and self.retry_or_fail(
                STATUS, status):
            if cluster is not None:
                cluster.stats.record(status)
            return  # the answer is dropped; another try follows
        self.status = status
        if route.chain.on_response:
            for phase in route.chain.on_response:
                phase(self, status, out)
        proto = self.proto
        keep_alive = self.keep_alive and not proto.worker.draining
        if length is not None:
            framing = b"content-length: " + length + b"\r\n"
        elif self.head_only or status < 200 or status == 204 or status == 304:
            framing = b""  # no body
        elif self.http11:
            framing = b"transfer-encoding: chunked\r\n"
            self.chunked_out = True
        else:
            framing = b""  # an HTTP/1.0 client reads until we close
            keep_alive = False
        if not keep_alive:
            framing += b"connection: close\r\n"
            self.keep_alive = False
        elif not self.http11:
            framing += b"connection: keep-alive\r\n"
        self.response_started = True
        head = b"".join((
            _STATUS_LINES.get(status) or status_line(status), serialize_headers(out), framing,
            b"\r\n",
        ))
        held = proto.out
        if held is None:
            proto.transport.write(head)
        else:
            held.append(head)

    # -- protocol upgrade -------------------------------------------------------------------
    def switching_protocols(self, headers: Headers) -> None:
        """Forward the upstream's 101: its own fields, minus hop-by-hop ones, plus the switch."""
        upgrade = next((v for n, v in headers if n == b"upgrade"), self.upgrade or b"")
        out = [h for h in headers if h[0] not in HOP_BY_HOP]
        route = self.route
        assert route is not None
        for phase in route.chain.on_response:
            phase(self, 101, out)
        self.response_started = True
        self.proto.write(b"".join((
            status_line(101), serialize_headers(out),
            b"connection: upgrade\r\nupgrade: ", upgrade, b"\r\n\r\n",
        )))

    def on_tunnel_open(self, early: bytes) -> None:
        conn = self.conn
        assert conn is not None
        self.proto.enter_tunnel(conn)
        if early:
            self.on_tunnel_data(early)

    def on_tunnel_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.proto.write(data)

    def on_tunnel_closed(self) -> None:
        """The upstream closed the tunnel: close the client side after what was sent."""
        self.conn = None
        self.keep_alive = False
        self.finish()

    def on_response_body(self, chunk: bytes) -> None:
        self.bytes_out += len(chunk)
        if self.chunked_out:
            self.proto.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        elif not self.head_only:
            held = self.proto.out
            if held is None:
                self.proto.transport.write(chunk)
            else:
                held.append(chunk)

    def on_response_complete(self, reusable: bool) -> None:
        if self.chunked_out:
            self.proto.write(b"0\r\n\r\n")
        conn = self.conn
        self.conn = None
        if conn is not None:
            if reusable and self.body_done:
                conn.pool.release(conn)
            else:
                conn.close()
        if self.cluster is not None:
            self.cluster.stats.by_class[STATUS_CLASS[self.status]] += 1
        if not self.body_done:
            self.keep_alive = False  # the rest of the request body will not be read
        self.finish()

    def on_upstream_error(self, reason: str, before_response: bool, stale: bool = False) -> None:
        self.conn = None
        self.upstream_error = reason
        if self.aborted:
            return
        if stale and not self.retried and self.endpoint is not None and (
                not self.has_body or (self.replay is not None and self.method in IDEMPOTENT)):
            # A pooled connection the upstream had already closed: nothing was processed,
            # so the request is sent again once, on a new connection, with its body if any
            # (later chunks join the copy while the new connection opens).
            self.retried = True
            if self.replay:
                self.pending = list(self.replay)
                self.pending_size = self.replay_size
            self.endpoint.pool.connect_new(self)
            return
        if self.response_started:
            self.status = self.status or 502
            self.record_outcome(False)
            self.proto.abort()  # the client sees a truncated response, never a wrong one
            self.finish()
            return
        connect_failure = reason.startswith("connect")
        self.record_outcome(False)
        if self.retry_or_fail(CONNECT_FAILURE if connect_failure else RESET, fresh=stale):
            return
        if self.cluster is not None:
            if connect_failure:
                self.cluster.stats.connect_failures += 1
            else:
                self.cluster.stats.record(502)
        self.send_error(502, b"upstream unavailable\n")

    def on_upstream_failed(self, reason: str, timed_out: bool) -> None:
        """The pool could not connect (``PoolClient``)."""
        self.on_upstream_error("connect timeout" if timed_out else reason, True)

    def on_try_timeout(self) -> None:
        """This try took longer than ``perTryTimeout``."""
        self.try_timer = None
        self.upstream_error = "upstream per-try timeout"
        if self.cluster is not None:
            self.cluster.stats.timeouts += 1
        self.record_outcome(False)
        if self.retry_or_fail(TIMEOUT):
            return
        self.end_try()
        self.send_error(504, b"upstream timed out\n")

    def on_timeout(self) -> None:
        """The whole exchange exceeded the route's ``timeout``."""
        self.timer = None
        self.upstream_error = "upstream timeout"
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        if self.conn is not None:
            self.record_outcome(False)
        self.end_try()  # a late response must never reach another request
        if self.cluster is not None:
            self.cluster.stats.timeouts += 1
        if self.response_started:
            self.proto.abort()
            self.finish()
        else:
            self.send_error(504, b"upstream timed out\n")

    def record_outcome(self, ok: bool) -> None:
        """Passive health: tell the cluster how the current try went."""
        cluster, endpoint = self.cluster, self.endpoint
        if cluster is not None and endpoint is not None and cluster.ejection is not None:
            cluster.record(endpoint, ok, time.monotonic())

    def on_upstream_pause_writing(self) -> None:
        self.proto.pause_reading_for_upstream()

    def on_upstream_resume_writing(self) -> None:
        self.proto.resume_reading_for_upstream()

    # -- local answers --------------------------------------------------------------------
    def send_redirect(self, route: CompiledRoute) -> None:
        redirect = route.redirect
        assert redirect is not None
        location = redirect_location(
            redirect, self.proto.listener.scheme.decode(), self.host_header(), self.host,
            self.path, self.query,
        )
        self.send_local(redirect.status_code, b"", [(b"location", location.encode("latin-1"))])

    def send_error(self, status: int, body: bytes) -> None:
        self.send_local(status, body, None)

    def send_local(
        self,
        status: int,
        body: bytes,
        headers: Headers | None,
        content_type: bytes = b"text/plain; charset=utf-8",
    ) -> None:
        self.status = status
        route = self.route
        if route is not None and route.chain.on_response:
            headers = list(headers or [])
            for phase in route.chain.on_response:
                phase(self, status, headers)
        if not self.body_done or self.proto.worker.draining:
            self.keep_alive = False  # an unread request body makes the connection unusable
        self.bytes_out = len(body)
        self.response_started = True
        self.proto.write(
            simple_response(
                status, body, headers, close=not self.keep_alive, head_only=self.head_only,
                content_type=content_type,
            )
        )
        self.finish()

    # -- phase 4: the end -----------------------------------------------------------------
    def release(self) -> None:
        """Give back what the exchange holds: timers, endpoint and upstream load counts."""
        self.deadline = 0.0
        if self.waiting_filter is not None:
            self.waiting_filter.cancel()
            self.waiting_filter = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.active -= 1
        cluster = self.cluster
        if cluster is not None and self.in_flight:
            self.in_flight = False
            cluster.active_requests -= 1
            if self.retrying:
                cluster.retries_active -= 1

    def finish(self) -> None:
        self.release()
        route = self.route
        elapsed = _perf_counter() - self.start
        if route is not None:
            stats = route.stats  # RouteStats.record, inlined: this runs for every request
            stats.by_class[STATUS_CLASS[self.status]] += 1
            stats.buckets[bisect_left(LATENCY_BOUNDS, elapsed)] += 1
            stats.latency_sum += elapsed
            for phase in route.chain.on_log:
                phase(self)
        access_log = self.proto.worker.access_log
        if access_log is not None:
            access_log.log(self, elapsed)
        self.proto.exchange_finished(self)

    def client_gone(self) -> None:
        """The downstream connection closed under this exchange."""
        if self.status == 101 and self.proto.tunnel is not None:
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.close()
            self.finish()  # a tunnel ended by the client is a normal end
            return
        self.aborted = True
        if self.waiting_filter is not None:
            self.waiting_filter.cancel()
            self.waiting_filter = None
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.abort()
        self.release()


__all__ = ["Exchange", "LocalResponse"]
