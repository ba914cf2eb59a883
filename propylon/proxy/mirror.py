"""Request mirroring: a copy of a request goes to another upstream, fire and forget.

The copy carries the same head the primary request was sent with (plus ``x-propylon-mirror:
1``) and, for requests with a body, the body once it was fully received (bodies over the
replay limit are not mirrored). Its answer is read and thrown away; the client never waits
for it and never sees it. A mirror that cannot connect, or is slow, costs the client nothing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from propylon.proxy.http11 import Headers

if TYPE_CHECKING:
    from propylon.proxy.h1.client import ClientConnection
    from propylon.runtime.compiled import Cluster, ClusterEndpoint

MIRROR_HEADER = b"x-propylon-mirror: 1\r\n"


class MirrorRequest:
    """One mirrored request: a pool client and an upstream client that discards answers."""

    __slots__ = (
        "aborted", "conn", "endpoint", "payload", "timer", "upgrade",
    )

    def __init__(self, head: bytes, body: list[bytes]) -> None:
        self.payload = [head[:-2] + MIRROR_HEADER + b"\r\n", *body]
        self.aborted = False
        self.upgrade: bytes | None = None
        self.conn: ClientConnection | None = None
        self.endpoint: ClusterEndpoint | None = None
        self.timer: asyncio.TimerHandle | None = None  # its deadline (the route's timeout)

    def send(self, cluster: Cluster, hash_key: str | None) -> None:
        """Send the copy, unless the mirror upstream's circuit breaker is full: a copy never
        waits past it, nor adds a connection over ``maxConnections`` (it is dropped and
        counted as the breaker's overflow, as a request would be refused)."""
        may_connect = True
        if cluster.breaker is not None:
            may_connect = cluster.may_open_connection()
            if cluster.overloaded() is not None:
                cluster.stats.overflows += 1
                return
        endpoint = cluster.balancer.pick(hash_key)
        if endpoint is None:
            return
        pool = endpoint.pool
        if not may_connect and pool.would_wait(may_connect):
            cluster.stats.overflows += 1
            return
        self.endpoint = endpoint
        endpoint.active += 1
        conn = pool.acquire(self, may_connect)
        if conn is not None:
            self.on_upstream_connected(conn)

    # -- PoolClient ----------------------------------------------------------------------
    def on_upstream_connected(self, conn: ClientConnection) -> None:
        self.conn = conn
        conn.attach(self, self, False)
        if conn.transport is not None:
            conn.transport.writelines(self.payload)
        self.payload = []

    def on_upstream_failed(self, reason: str, timed_out: bool) -> None:
        self._done()

    def proxy_addresses(self) -> tuple[str, int, str, int] | None:
        return None  # a mirrored copy names no client (v1 UNKNOWN, v2 LOCAL)

    # -- UpstreamClient: the answer is discarded ------------------------------------------
    def on_response_head(self, status: int, fields: Headers, length: bytes | None) -> None:
        return None

    def on_upgraded_head(self, headers: Headers) -> None:
        return None

    @property
    def body_sink(self) -> MirrorRequest:
        return self  # the body is read and dropped

    def on_response_body(self, chunk: bytes) -> None:
        return None

    def on_response_complete(self, reusable: bool, trailers: Headers | None = None) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            if reusable:
                conn.pool.release(conn)
            else:
                conn.close()
        self._done()

    def on_upstream_error(
        self, reason: str, before_response: bool, stale: bool = False, refused: bool = False,
    ) -> None:
        self.conn = None
        self._done()

    def on_upstream_pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.abort()  # a mirror never holds anything up: drop it instead
            self.conn = None

    def on_upstream_resume_writing(self) -> None:
        return None

    def on_tunnel_open(self, early: bytes) -> None:
        return None

    def on_tunnel_data(self, data: bytes) -> None:
        return None

    def on_tunnel_closed(self) -> None:
        return None

    # -- OutputBatcher: nothing goes to a client -------------------------------------------
    def hold_output(self) -> None:
        return None

    def end_upstream_read(self, size: int) -> None:
        return None

    def release_output(self) -> None:
        return None

    def upstream_half_closed(self) -> None:
        return None  # a mirror never opens a tunnel

    def _done(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.endpoint is not None:
            self.endpoint.active -= 1
            self.endpoint = None
