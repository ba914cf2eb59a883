"""One request's life, from the parsed request head to the end of the response.

Phases (Pingora's names in brackets), all driven by callbacks, no task per request:
1. ``begin``: route the request [request_filter]: no match -> 404; filters' ``on_request`` may
   answer locally; redirect / direct response answer locally; forward hands the request to a
   ``Forwarder`` [upstream_peer], which owns every upstream try.
2. request body: each chunk goes through the ``on_request_body`` filters, then to the
   forwarder (or is dropped when the request was answered locally).
3. ``on_response_head``: filters' ``on_response`` [response_filter], framing chosen for this
   client; body chunks stream through with backpressure both ways.
4. ``finish``: metrics, access log and filters' ``on_log`` [logging]; the client connection
   moves to its next request.

Invariants: at most one forwarder per request; a response head is written at most once
(``response_started``); after it, errors can only abort the client connection (or stream),
but a deadline ends a gRPC call between two messages with its status in trailers.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from propylon.filters.base import LocalResponse
from propylon.observability.metrics import LATENCY_BOUNDS, STATUS_SLOT
from propylon.observability.request_id import accepted_request_id, new_request_id
from propylon.proxy import forwarded, hostport
from propylon.proxy.body import TOO_LARGE, RequestBodyFilter, ResponseBodyFilter
from propylon.proxy.forwarded import forwarding_headers
from propylon.proxy.forwarder import Forwarder, hold_chunk
from propylon.proxy.grpc import deadline_trailers, is_grpc_request, trailers_only
from propylon.proxy.h1.framing import has_no_body
from propylon.proxy.http11 import HOP_BY_HOP, Headers, serialize_headers
from propylon.proxy.rewrite import redirect_location
from propylon.proxy.shared_values import shared_bytes
from propylon.runtime.compiled import FORWARD, REDIRECT, CompiledRoute, FilterChain

if TYPE_CHECKING:
    from propylon.observability.tracing import RequestTrace
    from propylon.proxy.h1.server import ServerConnection
    from propylon.proxy.h2.server import H2Stream
    from propylon.runtime.compiled import Cluster, GatewayRuntime

log = logging.getLogger("propylon.proxy")

# names of interpreted modules: C statics when compiled, not module dictionary probes
_perf_counter: Final = time.perf_counter
bisect_left: Final = bisect.bisect_left
real_client_ip: Final = forwarded.real_client_ip
is_ip_literal: Final = hostport.is_ip_literal


class Session:
    __slots__ = (
        "aborted",
        "body_done",
        "bytes_in",
        "bytes_out",
        "chain",
        "client_ip",
        "conn_header",
        "consumer",
        "deadline",
        "expect_continue",
        "forwarded",
        "forwarder",
        "framing",
        "gateway",
        "has_body",
        "head_only",
        "header_bytes",
        "host",
        "host_count",
        "host_value",
        "http11",
        "keep_alive",
        "method",
        "path",
        "path_text",
        "pending",
        "pending_size",
        "proto",
        "proxy_connection",
        "query",
        "req_chunked",
        "request_filter",
        "request_headers",
        "request_id",
        "request_trailers",
        "response_started",
        "route",
        "start",
        "state",
        "status",
        "te_codings",
        "trace",
        "trace_id",
        "upgrade",
        "upstream_error",
        "url",
        "waiting_filter",
    )

    # Set before any use, so not in __init__ (one store fewer each, per request): the target
    # and Host by the downstream parser, the rest when the session begins.
    path: bytes
    path_text: str  # the path decoded (latin-1), for routing
    query: bytes
    host: str
    gateway: GatewayRuntime
    start: float
    head_only: bool
    request_filter: RequestBodyFilter  # when the route has request body filters and a body
    # the route's chain when the request was routed (set with ``route``): a configuration
    # installed meanwhile may give the route another (``route_memo.RouteMemo.rechain``)
    chain: FilterChain
    trace_id: str  # set by tracing when it is on (never read unset: the access log checks)
    trace: RequestTrace  # likewise (observability/tracing.py); read with getattr elsewhere

    def __init__(self, proto: ServerConnection | H2Stream) -> None:
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
        self.proxy_connection = False  # HTTP/1.1: the request had a Proxy-Connection field
        self.expect_continue = False
        self.req_chunked = False
        self.framing = 0  # which framing fields the request carried (h1 framing checks)
        self.te_codings: bytes | None = None  # codings applied before chunked, forwarded as is
        self.upgrade: bytes | None = None  # protocol asked for with Upgrade + Connection: upgrade
        self.has_body = False
        self.request_trailers: Headers | None = None  # of a chunked body, passed upstream
        self.client_ip = proto.peer_ip
        # x-request-id: returned, sent upstream, logged; a trusted proxy's own is kept (begin)
        self.request_id = new_request_id()
        # request body
        self.body_done = False
        self.bytes_in = 0
        self.pending: list[bytes] | None = None  # chunks before the forwarder exists
        self.pending_size: int = 0
        # routing and upstream
        self.route: CompiledRoute | None = None
        self.forwarder: Forwarder | None = None
        self.deadline: float = 0.0  # a long route timeout, enforced by the worker's sweeper
        self.upstream_error = ""
        # response
        self.status = 0
        self.response_started: bool = False
        self.bytes_out = 0
        self.aborted = False
        # per-request data filters share between their phases (created on first use)
        self.state: dict[str, Any] | None = None
        # the consumer an auth policy identified (ConsumerIR): a slot, not a state entry, so
        # identifying one costs no dictionary per request
        self.consumer: Any = None
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
        if proto.peer_trusted:
            if self.forwarded:
                self.client_ip = real_client_ip(self.forwarded, proto.peer_ip,
                                                gateway.is_trusted)
            self._adopt_request_id()
        names = proto.tls_names
        if names is not None and self.host not in names and not is_ip_literal(self.host):
            self.send_error(421, b"this connection's certificate does not cover the host\n")
            return
        hosts = listener.hosts
        if hosts is not None and self.host not in hosts:
            route = None  # the listener does not serve this host
        else:
            route = gateway.router.match(
                self.host, self.method.decode("latin-1"), self.path_text, self
            )
        if route is None:
            route = gateway.not_found
        self.route = route
        self.chain = chain = route.chain
        if self.has_body and chain.on_request_body:
            self.request_filter = RequestBodyFilter(self, chain)
            if self.pending is not None:
                self._replay_early_body()
        if chain.on_request:
            self.run_request_filters(route, 0)
        elif route.kind == FORWARD:
            self.forward(route)
        else:
            self.dispatch(route)

    def _adopt_request_id(self) -> None:
        """A trusted proxy's x-request-id becomes this request's (codecs pass the field on
        only from trusted peers); it leaves the fields, the upstream head adds the id."""
        headers = self.request_headers
        for index, (name, value) in enumerate(headers):
            if name == b"x-request-id":
                del headers[index]
                kept = accepted_request_id(value)
                if kept is not None:
                    self.request_id = kept
                return

    def run_request_filters(self, route: CompiledRoute, start: int) -> None:
        """Run ``on_request`` filters from ``start``; an awaitable answer suspends the chain
        until it resolves, then the chain resumes with the next filter."""
        phases = self.chain.on_request
        for index in range(start, len(phases)):
            try:
                answer = phases[index].on_request(self)
            except Exception:
                log.exception("filter failed in on_request on %s", route.rule_id)
                self.send_error(500, b"internal error\n")
                return
            if answer is None:
                continue
            if isinstance(answer, LocalResponse):
                self._count_denial(route, index, answer.status)
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
            return  # the request ended while the filter was waiting
        error = future.exception()
        if error is not None:
            log.error("filter failed in on_request on %s: %r", route.rule_id, error)
            self.send_error(500, b"internal error\n")
            return
        answer = future.result()
        if answer is not None:
            self._count_denial(route, index, answer.status)
            self.send_local(answer.status, answer.body, answer.headers, answer.content_type)
        else:
            self.run_request_filters(route, index + 1)

    def _count_denial(self, route: CompiledRoute, index: int, status: int) -> None:
        """A policy answered instead of the upstream: refusals (>= 400) are counted by the
        policy that made them (its attachment and type: labels from configuration)."""
        if status >= 400:
            policy = self.chain.on_request[index]
            route.stats.count_denial(policy.source, policy.policy_type, status)
            trace = getattr(self, "trace", None)  # set by tracing, when the Gateway has it
            if trace is not None:
                trace.denied(policy.policy_type, policy.source)

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
        if self.chain.request_body_buffer and self.has_body and not self.body_done:
            # a filter needs the whole body before the upstream is contacted
            if self.request_filter.declared_over_limit(self):
                self.stop_request(TOO_LARGE)  # before the client sends it (no 100-continue)
                return
            self.request_filter.deferred = True
            if self.expect_continue:
                self.expect_continue = False
                self.proto.send_continue()
            return
        cluster = route.single_cluster or route.backends.pick()
        if cluster is None:
            if route.unresolved_share:  # the Gateway API: an invalid backend's share is a 500
                self.send_error(500, b"backend unresolved\n")
            else:
                self.send_error(503, b"no backend available\n")
            return
        if cluster.breaker is not None:
            overloaded = cluster.overloaded()
            if overloaded is not None:
                cluster.stats.overflows += 1
                self.send_local(503, b"upstream overloaded\n",
                                [(b"x-propylon-overloaded", overloaded)])
                return
        Forwarder(self, route, cluster)  # becomes self.forwarder; takes self.pending

    def forwarding_fields(self) -> bytes:
        """X-Forwarded-* and Forwarded, serialised. For a peer that is not a trusted proxy
        they depend only on the peer and the Host, so the connection keeps the last ones."""
        proto = self.proto
        host = self.host_value
        if not proto.peer_trusted and proto.forwarding_host == host:
            return proto.forwarding_fields
        _, fields = forwarding_headers(
            proto.peer_ip, proto.peer_trusted, self.forwarded or {},
            proto.listener.scheme, host, self.gateway.is_trusted,
        )
        serialized = serialize_headers(fields)
        if not proto.peer_trusted:
            serialized = shared_bytes(serialized)
            proto.forwarding_host, proto.forwarding_fields = shared_bytes(host), serialized
        return serialized

    # -- phase 2: the request body ---------------------------------------------------------
    def on_data(self, chunk: bytes, end_stream: bool) -> None:
        """A piece of the request body from the codec, in order; ``end_stream``: the body is
        complete (``chunk`` may be empty then). Request trailers, if any, are in
        ``request_trailers`` by then."""
        if chunk:
            self.bytes_in += len(chunk)
            self._request_chunk(chunk)
        if end_stream:
            self._request_end()

    def _request_chunk(self, chunk: bytes) -> None:
        route = self.route
        if route is not None and self.chain.on_request_body:
            if self.response_started and self.forwarder is None:
                return  # answered (locally, or stopped by a filter): the rest is dropped
            filtered = self.request_filter.on_chunk(self, chunk)
            if not filtered:
                return  # held by a filter, or the request was stopped
            chunk = filtered
        self._pass_chunk(chunk)

    def _pass_chunk(self, chunk: bytes) -> None:
        """A body chunk past the body filters: to the forwarder, or kept until it exists."""
        forwarder = self.forwarder
        if forwarder is not None:
            forwarder.send_body(chunk)
            return
        route = self.route
        if route is not None and route.kind != FORWARD:
            return  # answered locally: the body is read and dropped
        # kept until the forwarder has a connection (a request not routed yet included)
        hold_chunk(self, chunk, self.proto)

    def _replay_early_body(self) -> None:
        """Chunks that arrived before routing go through the route's body filters now."""
        early, self.pending = self.pending or [], None
        self.pending_size = 0
        for chunk in early:
            self._request_chunk(chunk)
            if self.response_started:
                return
        if self.body_done:
            self._end_request_body()

    def stop_request(self, answer: LocalResponse) -> None:
        """A body filter refused the request mid-body: drop the upstream side and answer."""
        self.keep_alive = False
        if self.aborted or self.route is None or self.route.kind != FORWARD:
            return
        self.pending = None
        forwarder = self.forwarder
        if forwarder is not None:
            forwarder.stop()
        if self.response_started:
            self.abort_response()
        else:
            self.send_local(answer.status, answer.body, answer.headers, answer.content_type)

    def _request_end(self) -> None:
        self.body_done = True
        route = self.route
        if route is not None and self.chain.on_request_body:
            if not (self.response_started and self.forwarder is None):
                self._end_request_body()  # unless the request was answered already
            return
        if self.forwarder is not None:
            self.forwarder.end_body()

    def _end_request_body(self) -> None:
        """The end of a body that went through the route's body filters."""
        route = self.route
        assert route is not None
        request_filter = self.request_filter
        last = request_filter.on_end(self)
        if self.response_started or self.aborted:
            return  # stopped by a filter
        if last:
            if request_filter.limit and not self.req_chunked:
                self.pending = [last]  # the whole body, now framed by its length
                self.pending_size = len(last)
            else:
                self._pass_chunk(last)
        if request_filter.deferred:
            request_filter.deferred = False
            self.forward(route)
        elif self.forwarder is not None:
            self.forwarder.end_body()

    # -- phase 3: the response ----------------------------------------------------------
    def on_response_head(self, status: int, out: Headers, length: bytes | None) -> None:
        """The upstream's answer head, hop-by-hop fields already removed (``out``)."""
        self.status = status
        route = self.route
        assert route is not None  # only a forwarded request gets an upstream answer
        chain = self.chain
        if chain.on_response:
            for phase in chain.on_response:
                phase(self, status, out)
        out.append((b"x-request-id", self.request_id))
        if chain.on_response_body and not has_no_body(status, self.head_only):
            assert self.forwarder is not None
            ResponseBodyFilter(self, chain, self.forwarder, status, out, length)
            return
        self.response_started = True
        self.proto.send_response_head(self, status, out, length)

    def on_response_complete(self, trailers: Headers | None) -> None:
        """The end of the answer; its body went to the client's stream (the forwarder's
        ``body_sink``) or through the response body filters."""
        if trailers:
            route = self.route
            if route is not None and self.chain.on_trailers:
                for phase in self.chain.on_trailers:
                    phase(self, trailers)
            self.proto.note_trailers(trailers)  # (HTTP/2: a gRPC call's grpc-status)
        if not self.body_done:
            self.keep_alive = False  # the rest of the request body will not be read
        self.finish(trailers)

    def abort_response(self) -> None:
        """The response cannot be completed: the client sees a truncated one, never a
        wrong one."""
        self.proto.abort()
        self.finish()

    def end_at_deadline(self, between_messages: bool) -> None:
        """The deadline passed after the answer began (its upstream side is dropped). A gRPC
        call ends as a gRPC server ends one past its deadline: DEADLINE_EXCEEDED in trailers
        when its body stopped ``between_messages`` and the client's framing carries
        trailers, else cancelled (HTTP/2: RST_STREAM CANCEL); other answers are cut."""
        if not is_grpc_request(self.request_headers):
            self.abort_response()
            return
        proto = self.proto
        if between_messages and proto.takes_trailers():
            trailers = deadline_trailers()
            proto.note_trailers(trailers)
            self.finish(trailers)
        else:
            proto.cancel()
            self.finish()

    # -- protocol upgrade -------------------------------------------------------------------
    def switching_protocols(self, headers: Headers) -> None:
        """Forward the upstream's 101: its own fields, minus hop-by-hop ones, plus the switch."""
        self.status = 101
        upgrade = next((v for n, v in headers if n == b"upgrade"), self.upgrade or b"")
        out = [h for h in headers if h[0] not in HOP_BY_HOP and h[0] != b"x-request-id"]
        route = self.route
        assert route is not None
        for phase in self.chain.on_response:
            phase(self, 101, out)
        out.append((b"x-request-id", self.request_id))
        self.response_started = True
        self.proto.send_switching_protocols(out, upgrade)

    def on_tunnel_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.proto.write(data)

    def on_tunnel_closed(self) -> None:
        """The upstream closed the tunnel: close the client side after what was sent."""
        self.keep_alive = False
        self.finish()

    # -- local answers --------------------------------------------------------------------
    def send_redirect(self, route: CompiledRoute) -> None:
        redirect = route.redirect
        assert redirect is not None
        location = redirect_location(
            redirect, self.proto.listener.scheme.decode(), self.host_value, self.host,
            self.path, self.query, route.prefix_from,
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
        headers = [*headers, (b"x-request-id", self.request_id)] if headers else [
            (b"x-request-id", self.request_id)]
        if status >= 400 and is_grpc_request(self.request_headers):
            # a gRPC client reads only grpc-status: a Trailers-Only answer (proxy/grpc.py)
            headers = trailers_only(status, body, headers)
            status, body, content_type = 200, b"", b"application/grpc"
        if route is not None and self.chain.on_response:
            for phase in self.chain.on_response:
                phase(self, status, headers)
        if not self.body_done or self.proto.worker.draining:
            self.keep_alive = False  # an unread request body makes the connection unusable
        self.bytes_out = len(body)
        self.response_started = True
        self.proto.send_local_response(self, status, body, headers, content_type)
        self.finish()

    def on_timeout(self) -> None:
        """The route's coarse deadline passed (checked by the connection's sweeper)."""
        self.deadline = 0.0
        if self.forwarder is not None:
            self.forwarder.on_timeout()

    # -- phase 4: the end -----------------------------------------------------------------
    def finish(self, trailers: Headers | None = None) -> None:
        """The end of the request: what it holds is given back, it is counted and logged,
        and the client stream ends its response (with ``trailers``, if any)."""
        self.deadline = 0.0  # what the request holds is given back first
        if self.waiting_filter is not None:
            self.waiting_filter.cancel()
            self.waiting_filter = None
        forwarder = self.forwarder
        if forwarder is not None:
            forwarder.release()
        route = self.route
        elapsed = _perf_counter() - self.start
        if route is not None:
            # RouteStats.record, inlined (this runs for every request)
            stats = route.stats
            status = self.status
            stats.by_code[STATUS_SLOT[status]] += 1
            stats.buckets[bisect_left(LATENCY_BOUNDS, elapsed)] += 1
            stats.latency_sum += elapsed
            totals = stats.totals
            totals.requests += 1
            if status >= 500:
                totals.errors += 1
            if self.has_body:
                stats.bytes_in += self.bytes_in
            stats.bytes_out += self.bytes_out
            for phase in self.chain.on_log:
                phase(self)
        access_log = self.proto.worker.access_log
        if access_log is not None:
            access_log.log(self, elapsed)
        if forwarder is not None:
            self.forwarder = None  # no reference cycle left: freed now, not by the cyclic GC
        self.proto.exchange_finished(self, trailers)

    def refused(self, status: int, sent: int, elapsed: float) -> None:
        """The request was refused before it was routed (bad syntax, too large, too slow:
        400, 408, 414, 431): counted on its Gateway's unrouted series (``route="none"``, as
        a request no route matched) and written to the access log, with what was read of it
        (an empty method or path when its head was not read that far)."""
        self.status = status
        self.bytes_out = sent
        if not hasattr(self, "path"):  # refused before its target was read
            self.path = self.query = b""
            self.path_text = ""
        if not hasattr(self, "host"):
            self.host = ""
        gateway = self.proto.listener.gateway
        if gateway is not None:
            gateway.not_found.stats.record(status, elapsed)
        access_log = self.proto.worker.access_log
        if access_log is not None:
            access_log.log(self, elapsed)

    def client_gone(self) -> None:
        """The client connection closed under this request."""
        forwarder = self.forwarder
        if self.status == 101 and self.proto.tunnel is not None:
            if forwarder is not None:
                conn, forwarder.conn = forwarder.conn, None
                if conn is not None:
                    conn.close()
            self.finish()  # a tunnel ended by the client is a normal end
            return
        self.aborted = True
        trace = getattr(self, "trace", None)
        if trace is not None:
            trace.finish(self, "client closed the connection")
        if self.waiting_filter is not None:
            self.waiting_filter.cancel()
            self.waiting_filter = None
        if hasattr(self, "start"):  # it began (routed or answered): counted and logged
            self._abandoned()
        if forwarder is not None:
            self.forwarder = None
            forwarder.client_gone()

    def _abandoned(self) -> None:
        """Count and log a request its client left before the end: 499 (nginx's "client
        closed request") when no answer had started, else the status being sent."""
        if not self.response_started:
            self.status = 499
        elapsed = _perf_counter() - self.start
        route = self.route
        if route is not None:
            route.stats.record(self.status, elapsed)
        access_log = self.proto.worker.access_log
        if access_log is not None:
            access_log.log(self, elapsed)


__all__ = ["LocalResponse", "Session"]
