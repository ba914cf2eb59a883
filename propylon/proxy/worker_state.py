"""What every connection of a worker shares: listeners' current Gateway, flags, sinks."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from propylon.observability.access_log import AccessLog
    from propylon.proxy.downstream import DownstreamProtocol
    from propylon.runtime.compiled import GatewayRuntime, HostSet


class ListenerState:
    """One bound listener; ``gateway`` is swapped when a new configuration is installed."""

    __slots__ = ("address", "gateway", "hosts", "port", "reject_underscores", "scheme", "server")

    def __init__(self, address: str, port: int, scheme: bytes = b"http") -> None:
        self.address = address
        self.port = port
        self.scheme = scheme
        self.gateway: GatewayRuntime | None = None
        self.hosts: HostSet | None = None  # the listener's hostnames; None serves any host
        self.server: asyncio.AbstractServer | None = None
        self.reject_underscores = True


class WorkerState:
    __slots__ = ("access_log", "connections", "draining", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, access_log: AccessLog | None) -> None:
        self.loop = loop
        self.access_log = access_log
        self.connections: set[DownstreamProtocol] = set()
        self.draining = False
