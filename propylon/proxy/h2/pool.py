"""The pool of an HTTP/2 upstream endpoint: a few connections, capacity counted in streams.

Invariants (the HTTP/1.1 pool's, ``proxy/pool.py``, with streams for connections):
- ``connections`` holds the connections that may still carry new streams (open or opening,
  not going away), oldest first: a request takes a stream on the oldest one with room, so
  traffic packs onto few connections and the newest ones age out under ``idle_timeout``.
- ``total`` counts every connection the pool owns, going-away ones included, and never exceeds
  ``max_connections`` (the circuit breaker's ``maxConnections`` counts it too).
- A request that finds no room waits in ``waiters`` (FIFO); a connection is opened when the
  waiters outnumber the streams the opening connections may offer. Each freed stream slot,
  each connection's first SETTINGS and each retired connection serves the waiters again.
- A connection whose opening fails fails the waiters only when nothing else may serve them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Protocol

from propylon.proxy.h2.client import MAX_STREAMS, H2ClientConnection, H2Stream
from propylon.proxy.mirror import MirrorRequest


class StreamClient(Protocol):
    """Whoever asked for a stream: told once, with a stream or a failure."""

    aborted: bool

    def on_upstream_connected(self, conn: H2Stream) -> None: ...

    def on_upstream_failed(self, reason: str, timed_out: bool) -> None: ...


class H2Pool:
    __slots__ = (
        "address", "connect_timeout", "connections", "idle_timeout", "loop",
        "max_connections", "max_idle", "opening", "port", "server_hostname", "ssl_context",
        "total", "waiters",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.loop = loop
        self.address = address
        self.port = port
        self.ssl_context = ssl_context  # h2 over TLS (ALPN h2) when set, else h2c
        self.server_hostname = server_hostname
        self.connections: list[H2ClientConnection] = []
        self.waiters: deque[StreamClient] = deque()
        self.total = 0
        self.opening = 0  # connects under way (not in ``connections`` yet)
        self.max_connections = 1024
        self.max_idle = 128
        self.connect_timeout = 5.0
        self.idle_timeout = 60.0

    def configure(
        self, max_connections: int, max_idle: int, connect_timeout: float, idle_timeout: float
    ) -> None:
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout

    # -- acquiring -------------------------------------------------------------------------
    def would_wait(self, may_connect: bool = True) -> bool:
        return self._with_room() is None and (
            not may_connect or self.total >= self.max_connections)

    def acquire(self, client: StreamClient, may_connect: bool = True) -> H2Stream | None:
        """A stream now, or ``None`` after arranging for ``client`` to be told."""
        if isinstance(client, MirrorRequest):
            client.on_upstream_failed("mirroring to an HTTP/2 upstream is not supported", False)
            return None
        conn = self._with_room()
        if conn is not None and not self.waiters:
            return conn.open_stream()
        self.waiters.append(client)
        self._grow(may_connect)
        return None

    def connect_new(self, client: StreamClient) -> None:
        """A stream for a request sent again (its stream was refused or went stale): any
        connection still taking streams will do, a going-away one never is."""
        self.waiters.appendleft(client)
        self._serve()

    def _with_room(self) -> H2ClientConnection | None:
        for conn in self.connections:
            if conn.room() > 0:
                return conn
        return None

    def _grow(self, may_connect: bool = True) -> None:
        """Open a connection if the waiters outnumber what opening connections may offer."""
        coming = self.opening + sum(1 for c in self.connections if not c.ready)
        if (may_connect and len(self.waiters) > coming * MAX_STREAMS
                and self.total < self.max_connections):
            self._connect()

    def _connect(self) -> None:
        self.total += 1
        self.opening += 1
        tls = self.ssl_context is not None
        task = asyncio.ensure_future(self.loop.create_connection(
            lambda: H2ClientConnection(self, tls), self.address, self.port,
            ssl=self.ssl_context, server_hostname=self.server_hostname if tls else None,
        ))
        timer = self.loop.call_later(self.connect_timeout, task.cancel)
        task.add_done_callback(lambda t: self._connected(t, timer))

    def _connected(
        self, task: asyncio.Future[tuple[asyncio.Transport, H2ClientConnection]],
        timer: asyncio.TimerHandle,
    ) -> None:
        timer.cancel()
        self.opening -= 1
        if task.cancelled() or task.exception() is not None:
            self.total -= 1
            timed_out = task.cancelled()
            self._opening_failed(
                "connect timeout" if timed_out else f"connect failed: {task.exception()}",
                timed_out)
            return
        transport, conn = task.result()
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None and sslobj.selected_alpn_protocol() not in ("h2", None):
            transport.abort()  # connection_lost -> forget() counts it out
            self._opening_failed("connect failed: the upstream did not accept ALPN h2", False)
            return
        if conn.closed:  # it closed before this callback: forget() counted it out
            return
        self.connections.append(conn)
        if conn.ready:  # its first SETTINGS came before this callback (they may, over TLS)
            self._serve()

    def _opening_failed(self, reason: str, timed_out: bool) -> None:
        """A connection could not be opened: the waiters fail unless another may serve them."""
        if self.opening or self.connections:
            self._serve()
            return
        waiters, self.waiters = self.waiters, deque()
        for waiter in waiters:
            if not waiter.aborted:
                waiter.on_upstream_failed(reason, timed_out)

    # -- what connections report ---------------------------------------------------------------
    def room_made(self, conn: H2ClientConnection) -> None:
        """A stream slot was freed, or ``conn`` learned the peer's limits."""
        if self.waiters:
            self._serve()

    def retire(self, conn: H2ClientConnection) -> None:
        """``conn`` takes no new stream (GOAWAY); its streams finish, then it closes."""
        if conn in self.connections:
            self.connections.remove(conn)
        self._serve()

    def forget(self, conn: H2ClientConnection, reason: str) -> None:
        """``conn`` closed (``reason``): it no longer counts against the limit."""
        self.total -= 1
        was_ready = conn.ready
        if conn in self.connections:
            self.connections.remove(conn)
        if not was_ready and self.waiters:
            self._opening_failed(reason, False)
        else:
            self._serve()

    def release(self, stream: H2Stream) -> None:
        """A forwarder gives back the stream of a cleanly ended exchange."""
        stream.release()

    def _serve(self) -> None:
        waiters = self.waiters
        while waiters:
            if waiters[0].aborted:
                waiters.popleft()
                continue
            conn = self._with_room()
            if conn is None:
                break
            waiters.popleft().on_upstream_connected(conn.open_stream())
        if waiters:
            self._grow()

    # -- housekeeping ----------------------------------------------------------------------------
    def close_expired(self, now: float) -> None:
        """Close connections that carried no stream for ``idle_timeout`` (called periodically),
        and idle ones beyond ``max_idle``."""
        limit = now - self.idle_timeout
        idle = [c for c in self.connections if c.active == 0 and c.ready]
        for index, conn in enumerate(idle):
            if conn.idle_since < limit or index >= max(self.max_idle, 1):
                self.connections.remove(conn)
                conn.close()

    def close_idle(self) -> None:
        for conn in [c for c in self.connections if c.active == 0]:
            self.connections.remove(conn)
            conn.close()
