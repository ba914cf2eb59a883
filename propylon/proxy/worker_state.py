"""What every connection of a worker shares: listeners' current Gateway, limits, sinks."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from propylon.ir import ListenerLimitsIR, PathNormalizationIR, ProxyProtocolIR
from propylon.proxy.batch import WriteBatch

if TYPE_CHECKING:
    from propylon.observability.access_log import AccessLog
    from propylon.proxy.acceptor import Acceptor
    from propylon.proxy.h1.server import ServerConnection
    from propylon.proxy.h2.server import H2ServerConnection
    from propylon.proxy.tls import ServerTLS
    from propylon.runtime.compiled import GatewayRuntime, HostSet


@dataclass(frozen=True, slots=True)
class ProxyProtocolSettings:
    """A listener's PROXY protocol reading, ready for connections (mode is not off)."""

    optional: bool
    versions: frozenset[int]
    sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def trusts(self, peer_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.sources)


def proxy_protocol_settings(spec: ProxyProtocolIR) -> ProxyProtocolSettings | None:
    if spec.mode == "off":
        return None
    return ProxyProtocolSettings(
        optional=spec.mode == "optional",
        versions=frozenset(spec.versions),
        sources=tuple(ipaddress.ip_network(cidr, strict=False) for cidr in spec.trusted_sources),
    )


class ListenerState:
    """One bound listener. ``apply`` swaps in a new configuration's view of it; each request
    reads these fields once when it starts, so it runs on one version throughout."""

    __slots__ = (
        "acceptor",
        "address",
        "gateway",
        "header_read_timeout",
        "hosts",
        "http2",
        "keep_alive_timeout",
        "max_head_bytes",
        "max_header_bytes",
        "max_header_count",
        "max_request_line",
        "paths",
        "port",
        "proxy_errors",
        "proxy_protocol",
        "reject_underscores",
        "scheme",
        "stream_idle_timeout",
        "tls",
    )

    def __init__(self, address: str, port: int, scheme: bytes = b"http") -> None:
        self.address = address
        self.port = port
        self.scheme = scheme
        self.gateway: GatewayRuntime | None = None
        self.hosts: HostSet | None = None  # the listener's hostnames; None serves any host
        self.acceptor: Acceptor | None = None
        self.tls: ServerTLS | None = None
        self.paths: PathNormalizationIR | None = PathNormalizationIR()  # None: raw paths
        self.proxy_protocol: ProxyProtocolSettings | None = None  # None: no PROXY header read
        self.http2 = True  # h2c with prior knowledge accepted (HTTPS: ALPN h2 offered)
        # connections closed over their PROXY header, by reason (missing, malformed,
        # untrusted, timeout); kept across configuration versions like other counters
        self.proxy_errors: dict[str, int] = {}
        self.set_limits(ListenerLimitsIR())

    def set_path_normalization(self, options: PathNormalizationIR) -> None:
        self.paths = options if options.enabled else None

    def set_proxy_protocol(self, spec: ProxyProtocolIR) -> None:
        self.proxy_protocol = proxy_protocol_settings(spec)
        if self.acceptor is not None:
            self.acceptor.listener = self  # HTTPS: the acceptor reads the header before TLS

    def count_proxy_error(self, reason: str) -> None:
        self.proxy_errors[reason] = self.proxy_errors.get(reason, 0) + 1

    def set_tls(self, tls: ServerTLS | None) -> None:
        self.tls = tls
        self.scheme = b"https" if tls is not None else b"http"
        if self.acceptor is not None:
            self.acceptor.ssl_context = tls.default if tls is not None else None

    def set_limits(self, limits: ListenerLimitsIR) -> None:
        self.max_request_line = limits.max_request_line_bytes
        self.max_header_bytes = limits.max_header_bytes
        self.max_header_count = limits.max_header_count
        # what an unfinished request head may take in all: request line, fields, their
        # separators and line ends, and some slack
        self.max_head_bytes = (
            self.max_request_line + self.max_header_bytes + 4 * self.max_header_count + 1024
        )
        self.reject_underscores = limits.reject_underscore_headers
        self.header_read_timeout = limits.header_read_timeout
        self.keep_alive_timeout = limits.keep_alive_timeout
        self.stream_idle_timeout = limits.stream_idle_timeout
        if self.acceptor is not None:
            self.acceptor.max_connections = limits.max_connections


class WorkerState:
    __slots__ = ("access_log", "batch", "connections", "draining", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, access_log: AccessLog | None) -> None:
        self.loop = loop
        self.batch = WriteBatch(loop)
        self.access_log = access_log
        self.connections: set[ServerConnection | H2ServerConnection] = set()
        self.draining = False
