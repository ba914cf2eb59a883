"""The upstream side of one forwarded request: tries, retries, timers, breaker, mirror, replay.

A ``Forwarder`` is made by the session once every ``on_request`` filter let the request
through and the rule forwards. It picks a backend and an endpoint, asks the endpoint's pool
for a connection, sends the request head and streams the request body the session hands it
(``send_body`` / ``end_body``), and passes the upstream's answer to the session
(``Session.on_response_head`` / ``on_response_complete``), unless the answer is worth another
try. Response body chunks go from the upstream connection straight to the forwarder's
``body_sink`` (the session, or its response body filters), read once per response.

Invariants: at most one upstream connection at a time; a try that ends (failure, timeout,
retry) aborts its connection, so a late answer never reaches another request; once the
session started its response nothing is retried; ``release`` gives back every count and
timer exactly once.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from typing import TYPE_CHECKING, Final, Protocol, cast

from propylon.observability.metrics import STATUS_SLOT, UPSTREAM_BOUNDS
from propylon.proxy import clock, grpc
from propylon.proxy.h1.client import frame_body, serialize_request_head
from propylon.proxy.mirror import MirrorRequest
from propylon.proxy.pool import abandon
from propylon.runtime.retry import CONNECT_FAILURE, GRPC, RESET, STATUS, TIMEOUT

if TYPE_CHECKING:
    from propylon.proxy.body import ResponseBodyFilter
    from propylon.proxy.h1.client import BodySink, ClientConnection
    from propylon.proxy.h2.client import H2Stream
    from propylon.proxy.h2.pool import H2Pool
    from propylon.proxy.http11 import Headers
    from propylon.proxy.pool import EndpointPool
    from propylon.proxy.session import Session
    from propylon.runtime.compiled import Cluster, ClusterEndpoint, CompiledRoute

COARSE_DEADLINE: Final = 5.0  # route timeouts at least this long are checked by the sweeper
MAX_PENDING_BODY: Final = 256 * 1024  # buffered before the upstream is ready; reading pauses above
MAX_REPLAY_BODY: Final = 1024 * 1024  # bodies kept for retries and mirrors; larger ones are not
# Bodies of idempotent requests kept (on routes without retries or mirror) for the one free
# retry after a stale pooled connection; larger ones get 502 when they meet one.
MAX_STALE_REPLAY_BODY: Final = 64 * 1024
MAX_REFUSED_RESENDS: Final = 4  # a request whose HTTP/2 stream the upstream refused
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# names of interpreted modules: C statics when compiled, not module dictionary probes
_perf_counter: Final = time.perf_counter
bisect_left: Final = bisect.bisect_left
CLOCK: Final = clock.CLOCK
status_in: Final = grpc.status_in


def expire_mirror(request: MirrorRequest) -> None:
    """A mirrored copy reached its route's ``timeout``: drop it if it is still going (its
    connection aborted, or its place in the pool's queue given up)."""
    if request.endpoint is None:
        return  # answered, or failed, meanwhile
    request.aborted = True  # a queued copy is skipped by the pool, a connecting one released
    conn, request.conn = request.conn, None
    if conn is not None:
        conn.abort()
    request._done()


class PendingBody(Protocol):
    """Body chunks kept until a connection takes them (the session's, then its forwarder's)."""

    pending: list[bytes] | None
    pending_size: int


class ReadPauser(Protocol):
    def pause_reading_for_body(self) -> None: ...


def hold_chunk(holder: PendingBody, chunk: bytes, client: ReadPauser) -> None:
    """Keep ``chunk`` for later; reading from the client pauses above MAX_PENDING_BODY."""
    if holder.pending is None:
        holder.pending = [chunk]
    else:
        holder.pending.append(chunk)
    holder.pending_size += len(chunk)
    if holder.pending_size > MAX_PENDING_BODY:
        client.pause_reading_for_body()


class Forwarder:
    __slots__ = (
        "aborted",
        "body_sink",
        "cluster",
        "conn",
        "end_sink",
        "endpoint",
        "endpoint_label",
        "head_status",
        "head_waited",
        "mirror_to",
        "pending",
        "pending_size",
        "replay",
        "replay_max",
        "replay_size",
        "resends",
        "retry_timer",
        "retrying",
        "route",
        "sent_at",
        "session",
        "timer",
        "tries",
        "try_timer",
    )

    def __init__(self, session: Session, route: CompiledRoute, cluster: Cluster) -> None:
        """The forwarder of ``session`` (set as its ``forwarder`` first, so that an answer
        made during the first try releases it); the first try starts here."""
        session.forwarder = self
        self.session = session
        self.route = route
        self.cluster = cluster
        # where the answer's body chunks and its end go: the client's stream and the
        # session, or the response body filters (proxy/body.py) when the route has some
        self.body_sink: BodySink = session.proto
        self.end_sink: Session | ResponseBodyFilter = session
        # released: not counted in the cluster's active requests any more, and the pool
        # drops a connection handed to it (PoolClient)
        self.aborted = False
        self.conn: ClientConnection | H2Stream | None = None
        self.endpoint: ClusterEndpoint | None = None
        self.endpoint_label: str | None = None  # the last endpoint tried, for the access log
        # the last try's answer: its status and seconds from the head sent to the head
        # received (0, -1.0 before one), for the access log
        self.head_status = 0
        self.head_waited = -1.0
        self.timer: asyncio.TimerHandle | None = None
        self.try_timer: asyncio.TimerHandle | None = None
        self.retry_timer: asyncio.TimerHandle | None = None
        self.resends = 0  # free tries after a stale connection or a refused stream
        self.retrying = False  # waiting for the next try
        self.tries = 0
        # body chunks waiting for a connection (the session's, so far)
        self.pending: list[bytes] | None = session.pending
        self.pending_size = session.pending_size
        self.replay: list[bytes] | None = None  # body kept for retries and the mirror
        self.mirror_to: Cluster | None = None  # mirror still to be sent (body incomplete)
        # the first try
        cluster.active_requests += 1
        if session.has_body:
            if route.retry is not None or route.mirror is not None:
                self.keep_replay(MAX_REPLAY_BODY)
            elif session.method in IDEMPOTENT:
                self.keep_replay(MAX_STALE_REPLAY_BODY)
        if session.chain.on_upstream_request:
            for phase in session.chain.on_upstream_request:
                phase(session)
        proto = session.proto
        if session.expect_continue:
            proto.send_continue()
        timeout = route.timeout
        if timeout:
            if timeout >= COARSE_DEADLINE:
                # checked by the worker's sweeper (about twice a second): a timer per request
                # costs more than the precision is worth for long deadlines
                session.deadline = CLOCK.now + timeout
            else:
                self.timer = proto.loop.call_later(timeout, self.on_timeout)
        if route.mirror is not None and random.random() * 100 < route.mirror_percent:
            self.mirror_to = route.mirror
            self.start_mirror()
        self.try_endpoint(None)

    @property
    def upgrade(self) -> bytes | None:
        """``UpstreamClient``: the protocol the request asked to switch to."""
        return self.session.upgrade

    # -- tries ---------------------------------------------------------------------------
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
        cluster, route = self.cluster, self.route
        key = self.session.hash_key(cluster) if cluster.hash_kind else None
        endpoint = cluster.balancer.pick(key)
        if previous is not None and endpoint is previous:
            endpoint = cluster.another_endpoint(previous) or endpoint
        if endpoint is None:
            self.session.send_error(503, b"no healthy upstream endpoint\n")
            return
        self.endpoint = endpoint
        self.endpoint_label = endpoint.label
        endpoint.active += 1
        self.tries += 1
        retry = route.retry
        if retry is not None and retry.per_try_timeout:
            self.try_timer = self.session.proto.loop.call_later(
                retry.per_try_timeout, self.on_try_timeout)
        # the data plane's pools, by name: the runtime's Protocol (runtime/pools.py) would
        # make each call a lookup by name in the compiled build
        pool = cast("EndpointPool | H2Pool", endpoint.pool)
        may_connect = True
        if cluster.breaker is not None:
            may_connect = cluster.may_open_connection()
            if pool.would_wait(may_connect) and not cluster.may_queue():
                cluster.stats.overflows += 1
                self.session.send_local(503, b"upstream overloaded\n",
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
        session = self.session
        if mirror is None or not session.body_done:
            return
        self.mirror_to = None
        if session.has_body and self.replay is None:
            return  # the body outgrew the replay limit: no copy
        body = frame_body(self.replay or [], session.req_chunked, True, session.request_trailers)
        request = MirrorRequest(serialize_request_head(session, self.route), body)
        request.send(mirror, session.hash_key(mirror) if mirror.hash_kind else None)
        timeout = self.route.timeout
        if timeout and request.endpoint is not None:
            # the copy gets the route's deadline too: a mirror that never answers must not
            # hold its connection (or its place in the pool's queue) for ever
            request.timer = session.proto.loop.call_later(timeout, expire_mirror, request)

    # -- retries ---------------------------------------------------------------------------
    def retry_or_fail(self, condition: str, status: int = 0, fresh: bool = False) -> bool:
        """Schedule another try if the route allows one for this failure; True if it did.
        ``fresh``: the next try opens a new connection."""
        route, cluster, endpoint, session = self.route, self.cluster, self.endpoint, self.session
        retry = route.retry
        if (retry is None or session.response_started or self.tries > retry.attempts
                or not retry.retries_on(condition, status)
                or (session.has_body and (self.replay is None or not session.body_done))):
            return False
        if not retry.budget_allows(cluster.retries_active, cluster.active_requests):
            cluster.stats.retries_denied += 1
            return False
        cluster.stats.retries += 1
        trace = getattr(session, "trace", None)  # set by tracing, when the Gateway has it
        if trace is not None:
            trace.retry(session, self.endpoint_label, condition, status)
        self.end_try()
        self.pending = list(self.replay) if self.replay else None
        if not self.retrying:  # a request counts once in the budget, however many retries
            self.retrying = True
            cluster.retries_active += 1
        self.retry_timer = session.proto.loop.call_later(
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
            if conn is None:
                # the try was still waiting for a connection (queued, or one being opened):
                # the pool must not hand it to the next try, or send the request twice
                abandon(cast("EndpointPool | H2Pool", endpoint.pool), self)

    # -- the request, upstream -------------------------------------------------------------
    def on_upstream_connected(self, conn: ClientConnection | H2Stream) -> None:
        """``PoolClient``: a connection for this try (or an HTTP/2 stream, ``h2/client.py``'s
        ``H2Stream``, which has the same methods); it serialises the request head."""
        if self.aborted:
            conn.pool.release(conn)  # type: ignore[arg-type]  # its own pool
            return
        session = self.session
        proto = session.proto
        self.conn = conn
        conn.attach(self, proto, session.head_only)
        self.sent_at = _perf_counter()  # the upstream response time starts with the head
        pending = self.pending
        conn.send_request(session, self.route, pending, proto.batch)
        if pending:
            self.pending = None
            self.pending_size = 0
            proto.resume_reading_for_body()
        if proto.writing_paused and conn.transport is not None:
            conn.transport.pause_reading()

    def proxy_addresses(self) -> tuple[str, int, str, int] | None:
        """The client for an upstream PROXY header: the request's client address (after a
        PROXY header or trustedProxies), the port when it is the peer's own, and the address
        the client reached (what a PROXY header said, else the listening socket)."""
        return self.session.proto.client_addresses(self.session.client_ip)

    def on_upstream_failed(self, reason: str, timed_out: bool) -> None:
        """``PoolClient``: the pool could not connect."""
        self.on_upstream_error("connect timeout" if timed_out else reason, True)

    def send_body(self, chunk: bytes) -> None:
        """A piece of the request body, after the session's body filters."""
        replay = self.replay
        if replay is not None:
            self.replay_size += len(chunk)
            if self.replay_size > self.replay_max:
                self.replay = None  # too large to keep: this request will not be retried
            else:
                replay.append(chunk)
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.send_body(chunk)
            return
        if self.retrying:
            return  # the next try sends the replay copy
        hold_chunk(self, chunk, self.session.proto)

    def end_body(self) -> None:
        """The request body is complete (``session.body_done`` is set)."""
        if self.mirror_to is not None:
            self.start_mirror()
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.send_end(self.session.request_trailers)
        # otherwise on_upstream_connected sends the end after the pending chunks

    def stop(self) -> None:
        """The session ends the request early (a body filter refused it, the client left):
        drop the upstream side."""
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        self.end_try()
        self.pending = None

    # -- the answer (UpstreamClient) -------------------------------------------------------
    def on_upgraded_head(self, headers: Headers) -> None:
        """The upstream answered 101 to an upgrade request."""
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        self.session.switching_protocols(headers)

    def on_response_head(self, status: int, out: Headers, length: bytes | None) -> None:
        """The upstream's answer head, hop-by-hop fields already removed (``out``)."""
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        cluster = self.cluster
        stats = cluster.stats  # the upstream's response time, inlined: every request
        waited = _perf_counter() - self.sent_at
        stats.head_buckets[bisect_left(UPSTREAM_BOUNDS, waited)] += 1
        stats.head_sum += waited
        self.head_status = status
        self.head_waited = waited
        if cluster.ejection is not None:
            self.record_outcome(status < 500)
        retry = self.route.retry
        if retry is not None:
            if retry.retries_status(status) and self.retry_or_fail(STATUS, status):
                cluster.stats.record(status)
                return  # the answer is dropped; another try follows
            if retry.grpc_codes:
                code = status_in(out)  # a Trailers-Only gRPC answer carries it in its head
                if code is not None and code in retry.grpc_codes and self.retry_or_fail(
                        GRPC, code):
                    cluster.stats.record(status)
                    return
        self.session.on_response_head(status, out, length)

    def on_response_complete(self, reusable: bool, trailers: Headers | None = None) -> None:
        conn = self.conn
        self.conn = None
        session = self.session
        if conn is not None:
            if reusable and session.body_done:
                conn.pool.release(conn)  # type: ignore[arg-type]  # its own pool
            else:
                conn.close()
        self.cluster.stats.by_code[STATUS_SLOT[session.status]] += 1
        self.end_sink.on_response_complete(trailers)

    def on_upstream_error(
        self, reason: str, before_response: bool, stale: bool = False, refused: bool = False,
    ) -> None:
        self.conn = None
        if self.aborted:
            return
        session = self.session
        session.upstream_error = reason
        if stale and self.resends < (MAX_REFUSED_RESENDS if refused else 1) and (
                self.endpoint is not None) and (
                not session.has_body
                or (self.replay is not None and session.method in IDEMPOTENT)):
            # A pooled connection the upstream had already closed, or a stream it refused:
            # nothing was processed, so the request is sent again, with its body if any
            # (later chunks join the copy while the new connection opens). A stale
            # connection is a guess, so once; a refusal is the upstream's word, and the
            # stream sent again may land on the next connection to go away, so a few times.
            self.resends += 1
            trace = getattr(session, "trace", None)
            if trace is not None:
                trace.retry(session, self.endpoint_label,
                            "refused stream" if refused else "stale connection", 0)
            if self.replay:
                self.pending = list(self.replay)
                self.pending_size = self.replay_size
            self.endpoint.pool.connect_new(self)
            return
        if session.response_started:
            session.status = session.status or 502
            self.record_outcome(False)
            session.abort_response()  # the client sees a truncated response, never a wrong one
            return
        connect_failure = reason.startswith("connect")
        self.record_outcome(False)
        if connect_failure:  # every try's, as timeouts are: a retry that hides it counts too
            self.cluster.stats.connect_failures += 1
        if self.retry_or_fail(CONNECT_FAILURE if connect_failure else RESET, fresh=stale):
            return
        if not connect_failure:
            self.cluster.stats.record(502)
        session.send_error(502, b"upstream unavailable\n")

    def on_upstream_pause_writing(self) -> None:
        self.session.proto.pause_reading_for_upstream()

    def on_upstream_resume_writing(self) -> None:
        self.session.proto.resume_reading_for_upstream()

    def on_tunnel_open(self, early: bytes) -> None:
        conn = self.conn
        assert conn is not None
        self.session.proto.enter_tunnel(conn)  # type: ignore[arg-type]  # HTTP/1.1 only
        if early:
            self.on_tunnel_data(early)

    def on_tunnel_data(self, data: bytes) -> None:
        self.session.on_tunnel_data(data)

    def on_tunnel_closed(self) -> None:
        """The upstream closed the tunnel: close the client side after what was sent."""
        self.conn = None
        self.session.on_tunnel_closed()

    # -- timers ----------------------------------------------------------------------------
    def on_try_timeout(self) -> None:
        """This try took longer than ``perTryTimeout``."""
        self.try_timer = None
        self.session.upstream_error = "upstream per-try timeout"
        self.cluster.stats.timeouts += 1
        self.record_outcome(False)
        if self.retry_or_fail(TIMEOUT):
            return
        self.end_try()
        self.session.send_error(504, b"upstream timed out\n")

    def on_timeout(self) -> None:
        """The whole request exceeded the route's ``timeout`` (or the client's deadline:
        a gRPC ``grpc-timeout`` fires this before the route's timer)."""
        if self.aborted:
            return  # released meanwhile: a late timer
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        session = self.session
        session.upstream_error = "upstream timeout"
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        conn = self.conn
        between_messages = False
        if conn is not None:
            self.record_outcome(False)
            # what the client got ends there too: no response body filter holds a part
            between_messages = conn.between_grpc_messages() and (
                self.body_sink is session.proto)
        self.end_try()  # a late response must never reach another request
        self.cluster.stats.timeouts += 1
        if session.response_started:
            session.end_at_deadline(between_messages)
        else:
            session.send_error(504, b"upstream timed out\n")

    def record_outcome(self, ok: bool) -> None:
        """Passive health: tell the cluster how the current try went."""
        cluster, endpoint = self.cluster, self.endpoint
        if endpoint is not None and cluster.ejection is not None:
            cluster.record(endpoint, ok, time.monotonic())

    # -- the end -----------------------------------------------------------------------------
    def release(self) -> None:
        """Give back what the request holds: timers, endpoint and upstream load counts. A
        connection the pool hands over later (a connect that completes after the request
        was answered) goes back to the pool, never to this request. Once only."""
        if self.aborted:
            return
        self.aborted = True
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
        cluster.active_requests -= 1
        if self.retrying:
            cluster.retries_active -= 1

    def client_gone(self) -> None:
        """The client went away: nothing more is sent or read for it."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        self.release()
