"""Connection pools as the runtime sees them: an interface declared where it is used.

A compiled ``Cluster`` holds one pool per endpoint, from the ``PoolFactory`` its compilation
was lent (``Services.pools``); the data plane's pools (``proxy/pool.py``) implement both
interfaces, and the runtime never imports them (Traefik's router manager takes its service
manager the same way). ``EndpointPool`` lists what the runtime reads (labels, circuit-breaker
counts) and what the request path asks of ``ClusterEndpoint.pool``; the connection and
client types are the data plane's, opaque here.

``ScratchPools`` serves compilations that serve nothing (``validate``, ``explain``, the
supervisor's check): it loads an Upstream's TLS files as a real pool registry does, so the
same errors refuse the configuration, and its pools never connect.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sized
from typing import Any, Protocol

from propylon.ir import UpstreamTLSIR
from propylon.net.tls import client_context


class EndpointPool(Protocol):
    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def total(self) -> int:
        """Connections owned: connecting, busy and idle (``maxConnections``)."""

    @property
    def waiters(self) -> Sized:
        """Requests queued for a connection (``maxPendingRequests``)."""

    def configure(self, max_connections: int, max_idle: int, connect_timeout: float,
                  idle_timeout: float) -> None: ...

    # -- the request path's use ------------------------------------------------------------
    def would_wait(self, may_connect: bool = True) -> bool: ...

    def acquire(self, client: Any, may_connect: bool = True) -> Any: ...

    def connect_new(self, client: Any) -> None: ...


class PoolFactory(Protocol):
    """Every endpoint's pool; the same endpoint with the same TLS gets the same pool."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def get(
        self, address: str, port: int, tls: UpstreamTLSIR | None = None, proxy_version: int = 0,
        *, http2: bool = False,
    ) -> EndpointPool:
        """Raises ``ValueError`` when ``tls``'s files cannot be loaded. ``proxy_version``:
        the pool's connections start with a PROXY header (a separate pool). ``http2``: the
        pool's connections speak HTTP/2, its capacity counted in streams (a separate pool)."""


class ScratchPools:
    """Pools for a compilation that serves nothing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._contexts: dict[UpstreamTLSIR, ssl.SSLContext] = {}
        self._pools: dict[tuple[str, int, UpstreamTLSIR | None, int, bool], _ScratchPool] = {}

    def get(
        self, address: str, port: int, tls: UpstreamTLSIR | None = None, proxy_version: int = 0,
        *, http2: bool = False,
    ) -> EndpointPool:
        if tls is not None and tls not in self._contexts:
            self._contexts[tls] = client_context(tls, http2=http2)
        key = (address, port, tls, proxy_version, http2)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _ScratchPool(address, port)
        return pool


class _ScratchPool:
    __slots__ = ("address", "port")

    total = 0
    waiters = ()

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port

    def configure(self, max_connections: int, max_idle: int, connect_timeout: float,
                  idle_timeout: float) -> None:
        pass

    def would_wait(self, may_connect: bool = True) -> bool:
        return True

    def acquire(self, client: Any, may_connect: bool = True) -> Any:
        raise RuntimeError("a scratch pool never connects")

    def connect_new(self, client: Any) -> None:
        raise RuntimeError("a scratch pool never connects")
