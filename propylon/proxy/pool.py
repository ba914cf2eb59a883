"""Keep-alive connection pools, one per upstream endpoint (address, port).

Invariants (in the spirit of aiohttp's ``BaseConnector``):
- ``total`` counts every connection this pool owns: connecting, busy and idle. It never
  exceeds ``max_connections``; a request that finds the pool full waits in ``waiters`` (FIFO).
- ``idle`` holds only open, unowned connections; the newest is reused first so that the
  oldest ones age out under ``idle_timeout``.
- A connection handed to a waiter is never also in ``idle``. A waiter that gave up (its client
  went away) is skipped when its turn comes.
- Pools outlive configuration versions: reloading the config reuses the pool of an endpoint
  that is still configured, with its warm connections.
- A pool whose connections start with a PROXY header (``proxy_version``) reuses a connection
  only for a request whose header would be the same: the same client address and port and the
  same address reached (HAProxy hashes the PROXY line into its connection key, Envoy its
  addresses into the pool key). So a keep-alive client's requests share one upstream
  connection, and no request ever travels on a connection whose header named another client.
  Its idle connections stay bounded by ``max_idle`` over all clients together: the oldest idle
  one (whoever it named) is closed to make room, for a new idle one or, when the pool is full,
  for a client that has no connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final, Protocol

from propylon.ir import UpstreamTLSIR
from propylon.net.tls import client_context
from propylon.proxy import clock
from propylon.proxy.h2.pool import H2Pool
from propylon.proxy.proxy_protocol import build_proxy_header

CLOCK: Final = clock.CLOCK  # names of interpreted modules: C statics when compiled

if TYPE_CHECKING:
    from propylon.proxy.h1.client import ClientConnection

# (address, port, TLS settings, PROXY protocol version, HTTP/2)
PoolKey = tuple[str, int, UpstreamTLSIR | None, int, bool]
# What an upstream PROXY header names: (client ip, port, address it reached, port); None for
# a header naming no client (v1 UNKNOWN, v2 LOCAL)
ProxyAddresses = tuple[str, int, str, int] | None


class PoolClient(Protocol):
    """Whoever asked for a connection: told once, with a connection or a failure."""

    aborted: bool

    def on_upstream_connected(self, conn: ClientConnection) -> None: ...

    def on_upstream_failed(self, reason: str, timed_out: bool) -> None: ...

    def proxy_addresses(self) -> ProxyAddresses:
        """(client ip, port, address it reached, port) for an upstream PROXY header."""
        ...


class NamedConnections:
    """For a pool whose connections start with a PROXY header: which addresses each open
    connection's header named, and the idle connections by those addresses (newest last).
    The pool's own ``idle`` deque keeps the order over all clients; both hold the same
    connections, and the pool changes them together."""

    __slots__ = ("idle", "named")

    def __init__(self) -> None:
        self.named: dict[ClientConnection, ProxyAddresses] = {}
        self.idle: dict[ProxyAddresses, list[ClientConnection]] = {}

    def opened(self, conn: ClientConnection, addresses: ProxyAddresses) -> None:
        self.named[conn] = addresses

    def park(self, conn: ClientConnection) -> bool:
        """Keep ``conn`` idle under the addresses its header named; False if unknown."""
        if conn not in self.named:
            return False
        self.idle.setdefault(self.named[conn], []).append(conn)
        return True

    def take(self, addresses: ProxyAddresses) -> ClientConnection | None:
        """The newest idle connection whose header named ``addresses``, if any."""
        parked = self.idle.get(addresses)
        if not parked:
            return None
        conn = parked.pop()
        if not parked:
            del self.idle[addresses]
        return conn

    def unpark(self, conn: ClientConnection) -> None:
        addresses = self.named.get(conn)
        parked = self.idle.get(addresses)
        if parked and conn in parked:
            parked.remove(conn)
            if not parked:
                del self.idle[addresses]

    def forget(self, conn: ClientConnection) -> None:
        self.unpark(conn)
        self.named.pop(conn, None)


class EndpointPool:
    __slots__ = (
        "address",
        "by_client",
        "connect_timeout",
        "connecting",
        "idle",
        "idle_timeout",
        "loop",
        "max_connections",
        "max_idle",
        "port",
        "proxy_version",
        "server_hostname",
        "ssl_context",
        "total",
        "waiters",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        proxy_version: int = 0,
    ) -> None:
        self.loop = loop
        self.address = address
        self.port = port
        self.ssl_context = ssl_context  # TLS origination when set
        self.server_hostname = server_hostname
        # 1 or 2: each new connection starts with a PROXY header naming the client that
        # opened it, and is reused only for requests whose header would be the same
        self.proxy_version = proxy_version
        self.by_client = NamedConnections() if proxy_version else None
        self.idle: deque[ClientConnection] = deque()
        self.waiters: deque[PoolClient] = deque()
        # the connection being opened for each client still waiting for it (``abandon``)
        self.connecting: dict[PoolClient, asyncio.Future[Any]] = {}
        self.total = 0
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

    # -- acquiring -----------------------------------------------------------------------
    def would_wait(self, may_connect: bool = True) -> bool:
        """Whether ``acquire`` would queue the client (no idle connection, no new one)."""
        return not self.idle and (not may_connect or self.total >= self.max_connections)

    def acquire(self, client: PoolClient, may_connect: bool = True) -> ClientConnection | None:
        """An idle connection now, or ``None`` after arranging for ``client`` to be told.
        With ``may_connect`` false (an upstream-wide connection cap is reached) the client
        waits for a connection to be released rather than opening one."""
        if self.by_client is not None:
            return self._acquire_named(self.by_client, client, may_connect)
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:  # an idle connection that closed has left ``idle`` already
                return conn
        if may_connect and self.total < self.max_connections:
            self._connect(client)
        else:
            self.waiters.append(client)
        return None

    def _acquire_named(self, by_client: NamedConnections, client: PoolClient,
                       may_connect: bool) -> ClientConnection | None:
        """``acquire`` in a PROXY-header pool: only a connection whose header named the same
        addresses as ``client``'s would. When no connection may be opened, the oldest idle
        one (another client's) is closed and ``client`` waits for the room it leaves."""
        addresses = client.proxy_addresses()
        conn = by_client.take(addresses)
        while conn is not None:
            self.idle.remove(conn)
            if not conn.closed:
                return conn
            conn = by_client.take(addresses)
        if may_connect and self.total < self.max_connections:
            self._connect(client)
            return None
        self.waiters.append(client)
        if self.idle:
            self._close_oldest_idle()
        return None

    def connect_new(self, client: PoolClient) -> None:
        """A fresh connection for ``client`` (used to retry after a stale pooled one)."""
        if self.total < self.max_connections:
            self._connect(client)
        else:
            self.waiters.appendleft(client)

    def _connect(self, client: PoolClient) -> None:
        from propylon.proxy.h1.client import ClientConnection

        self.total += 1
        addresses = client.proxy_addresses() if self.proxy_version else None
        opening: Coroutine[Any, Any, tuple[asyncio.BaseTransport, ClientConnection]]
        if self.proxy_version and self.ssl_context is not None:
            opening = self._open_tls_after_header(
                build_proxy_header(self.proxy_version, addresses))
        else:
            opening = self.loop.create_connection(
                lambda: ClientConnection(self), self.address, self.port,
                ssl=self.ssl_context,
                server_hostname=self.server_hostname if self.ssl_context else None,
            )
        task = asyncio.ensure_future(opening)
        self.connecting[client] = task
        timer = self.loop.call_later(self.connect_timeout, task.cancel)
        task.add_done_callback(lambda t: self._connected(t, client, timer, addresses))

    async def _open_tls_after_header(
        self, header: bytes
    ) -> tuple[asyncio.BaseTransport, ClientConnection]:
        """TLS to an upstream that expects a PROXY header: the header goes first, in the clear,
        then the handshake (as HAProxy's send-proxy with ssl)."""
        from propylon.proxy.h1.client import ClientConnection

        assert self.ssl_context is not None
        transport, _ = await self.loop.create_connection(
            asyncio.Protocol, self.address, self.port)
        conn = ClientConnection(self)
        try:
            transport.write(header)
            tls = await self.loop.start_tls(
                transport, conn, self.ssl_context, server_hostname=self.server_hostname)
        except BaseException:
            transport.close()
            raise
        if tls is None:
            transport.close()
            raise ConnectionError("the TLS handshake did not complete")
        conn.connection_made(tls)  # start_tls does not call it
        return tls, conn

    def _connected(
        self, task: asyncio.Future[tuple[asyncio.BaseTransport, ClientConnection]],
        client: PoolClient, timer: asyncio.TimerHandle, addresses: ProxyAddresses,
    ) -> None:
        timer.cancel()
        # still wanted: not released, and not abandoned (a newer try of the client may be
        # waiting for another connection, which this one must not be taken for)
        wanted = self.connecting.get(client) is task
        if wanted:
            del self.connecting[client]
        if task.cancelled() or task.exception() is not None:
            self.total -= 1
            timed_out = task.cancelled()
            reason = "connect timeout" if timed_out else f"connect failed: {task.exception()}"
            if wanted and not client.aborted:
                client.on_upstream_failed(reason, timed_out)
            self._serve_waiters()
            return
        _, conn = task.result()
        if self.by_client is not None:
            self.by_client.opened(conn, addresses)
            if self.ssl_context is None and conn.transport is not None:
                conn.transport.write(build_proxy_header(self.proxy_version, addresses))
        if client.aborted or not wanted:
            self.release(conn)
        else:
            client.on_upstream_connected(conn)

    # -- returning -----------------------------------------------------------------------
    def release(self, conn: ClientConnection) -> None:
        """Give back a connection whose last exchange ended cleanly."""
        if self.by_client is not None:
            self._release_named(self.by_client, conn)
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.aborted:
                waiter.on_upstream_connected(conn)
                return
        if len(self.idle) < self.max_idle:
            conn.idle_since = CLOCK.now
            self.idle.append(conn)
        else:
            conn.close()

    def _release_named(self, by_client: NamedConnections, conn: ClientConnection) -> None:
        """``release`` in a PROXY-header pool: to the first waiter if its header would be
        this connection's, else closed for the room the first waiter needs; else idle."""
        waiters = self.waiters
        while waiters and waiters[0].aborted:
            waiters.popleft()
        if waiters:
            if conn in by_client.named and waiters[0].proxy_addresses() == by_client.named[conn]:
                waiters.popleft().on_upstream_connected(conn)
            else:
                conn.close()  # forget() then connects the first waiter
            return
        if self.max_idle <= 0 or not by_client.park(conn):
            conn.close()
            return
        if len(self.idle) >= self.max_idle:
            self._close_oldest_idle()
        conn.idle_since = CLOCK.now
        self.idle.append(conn)

    def _close_oldest_idle(self) -> None:
        conn = self.idle.popleft()
        if self.by_client is not None:
            self.by_client.unpark(conn)
        conn.close()

    def forget(self, conn: ClientConnection) -> None:
        """A connection closed or was discarded: it no longer counts against the limit."""
        self.total -= 1
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        if self.by_client is not None:
            self.by_client.forget(conn)
        self._serve_waiters()

    def _serve_waiters(self) -> None:
        while self.waiters and self.total < self.max_connections:
            waiter = self.waiters.popleft()
            if not waiter.aborted:
                self._connect(waiter)

    def abandon(self, client: PoolClient) -> None:
        """``client`` stopped waiting for the connection it asked for (its try ended: a
        per-try timeout, the route's timeout): it is never handed one, nor told of a failure,
        later. A connection being opened for it joins the pool when it opens."""
        with contextlib.suppress(ValueError):
            self.waiters.remove(client)
        self.connecting.pop(client, None)

    # -- housekeeping --------------------------------------------------------------------
    def close_expired(self, now: float) -> None:
        """Close idle connections older than ``idle_timeout`` (called periodically)."""
        limit = now - self.idle_timeout
        while self.idle and self.idle[0].idle_since < limit:
            self._close_oldest_idle()

    def close_idle(self) -> None:
        while self.idle:
            self._close_oldest_idle()


def abandon(pool: EndpointPool | H2Pool, client: PoolClient) -> None:
    """``EndpointPool.abandon`` for either kind of pool (an HTTP/2 pool's waiters only wait
    in its queue: its connections are opened for all of them)."""
    if isinstance(pool, EndpointPool):
        pool.abandon(client)
        return
    with contextlib.suppress(ValueError):
        pool.waiters.remove(client)  # type: ignore[arg-type]  # the same client, as a StreamClient


class PoolRegistry:
    """Every endpoint pool of a worker, shared by all configuration versions."""

    __slots__ = ("contexts", "loop", "pools")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pools: dict[PoolKey, EndpointPool | H2Pool] = {}
        self.contexts: dict[tuple[UpstreamTLSIR, bool], ssl.SSLContext] = {}

    def get(
        self, address: str, port: int, tls: UpstreamTLSIR | None = None, proxy_version: int = 0,
        *, http2: bool = False,
    ) -> EndpointPool | H2Pool:
        """The pool of an endpoint; endpoints reached with different TLS, PROXY protocol or
        HTTP version settings are different pools (a plaintext connection is never handed to
        a TLS upstream, nor one without a PROXY header to an upstream that expects one, nor
        an HTTP/1.1 connection to a request for an HTTP/2 upstream)."""
        key = (address, port, tls, proxy_version, http2)
        pool = self.pools.get(key)
        if pool is None:
            context = None
            if tls is not None:
                context = self.contexts.get((tls, http2))
                if context is None:
                    context = self.contexts[tls, http2] = client_context(tls, http2)
            hostname = (tls.sni or address) if tls is not None else None
            if http2:
                pool = self.pools[key] = H2Pool(self.loop, address, port, context, hostname)
            else:
                pool = self.pools[key] = EndpointPool(
                    self.loop, address, port, context, hostname, proxy_version)
        return pool

    def retain_only(self, keys: set[PoolKey]) -> None:
        """Drop pools no configured endpoint uses any more (their busy connections finish)."""
        for key in [k for k in self.pools if k not in keys]:
            self.pools.pop(key).close_idle()

    def close_expired(self) -> None:
        now = time.monotonic()
        for pool in self.pools.values():
            pool.close_expired(now)

    def close_idle(self) -> None:
        for pool in self.pools.values():
            pool.close_idle()
