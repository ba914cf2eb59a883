"""The Upstream model: endpoints (fixed, or discovered through DNS), failover groups, load
balancing, timeouts, the connection pool and which other namespaces may forward to it
(``allowedNamespaces``)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from propylon.config._types import (
    Duration,
    HeaderName,
    Model,
    Port,
    Weight,
    _check_name,
    exactly_one,
    invalid,
)
from propylon.schema import _check_hostname


def _namespace_or_all(value: str) -> str:
    return value if value == "*" else _check_name(value)


# A namespace name, or "*" for every namespace.
NamespaceGrant = Annotated[str, AfterValidator(_namespace_or_all)]


class Endpoint(Model):
    address: str = Field(min_length=1)  # an IP address or a host name
    port: Port
    weight: Weight = 1


def _check_resolver(value: str) -> str:
    """``IP:PORT`` or ``[IPv6]:PORT``: a resolver is reached by address (it resolves names)."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        ip, number = None, 0
    if not sep or ip is None or not 1 <= number <= 65535 or (ip.version == 6) != (
            value.startswith("[")):
        raise invalid("resolver", f'resolver "{value}" is not HOST:PORT (an IP address and a '
                      'port, e.g. 10.96.0.10:53 or [fd00::10]:53)')
    return f"[{ip}]:{number}" if ip.version == 6 else f"{ip}:{number}"


_SRV_NAME = re.compile(r"_[a-z0-9-]+\._(tcp|udp|tls|sctp)\.(.+)", re.IGNORECASE)


def _check_srv(value: str) -> str:
    found = _SRV_NAME.fullmatch(value.rstrip("."))
    if found is None:
        raise invalid("srv", f'srv "{value}" is not an SRV name: use _service._proto.name, '
                      'e.g. _http._tcp.shop.example.com')
    _check_hostname(found.group(2))  # the domain part: a valid host name
    return value.rstrip(".").lower()


class Dns(Model):
    """Resolve the group's host names (A/AAAA records, or an SRV name) off the request path,
    again at the records' TTL or ``refresh``, whichever comes first (never under 1s)."""

    refresh: Duration = 30.0
    resolvers: list[Annotated[str, AfterValidator(_check_resolver)]] = Field(
        default_factory=list)  # empty: the system's (/etc/resolv.conf)
    family: Literal["auto", "v4", "v6"] = "auto"
    srv: Annotated[str, AfterValidator(_check_srv)] | None = None

    @model_validator(mode="after")
    def _refresh_floor(self) -> Dns:
        if self.refresh < 1.0:
            raise invalid("dns_refresh", f"dns.refresh must be at least 1s (got {self.refresh}s)")
        return self


def _check_endpoints(endpoints: list[Endpoint], dns: Dns | None, where: str = "") -> None:
    """``endpoints`` xor ``dns.srv``; with ``dns`` every address an IP or a host name."""
    if dns is not None and dns.srv is not None:
        if endpoints:
            raise invalid("srv_with_endpoints", f"{where}dns.srv gives the endpoints: leave "
                          f"{where}endpoints out (or drop srv to resolve their names)")
        return
    if not endpoints:
        raise invalid("no_endpoints", f"{where}endpoints needs at least one endpoint (or "
                      "dns.srv)")
    if dns is None:
        return
    for endpoint in endpoints:
        if not _is_ip(endpoint.address) and not _is_host_name(endpoint.address):
            raise invalid("dns_address", f'{where}endpoints: "{endpoint.address}" is neither '
                          "an IP address nor a host name dns can resolve")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_host_name(value: str) -> bool:
    try:
        _check_hostname(value)
    except ValueError:
        return False
    return not value.startswith("*.")


class EndpointGroup(Model):
    """A failover group: endpoints used when the groups before it are not healthy enough.
    ``dns`` defaults to the Upstream's, without its ``srv``."""

    dns: Dns | None = None  # before endpoints: their validator reads it
    endpoints: list[Endpoint] = Field(default_factory=list, validate_default=True)

    @field_validator("endpoints")
    @classmethod
    def _endpoints_or_srv(cls, endpoints: list[Endpoint], info: ValidationInfo
                          ) -> list[Endpoint]:
        dns = info.data.get("dns")
        if dns is not None and dns.srv is not None:
            _check_endpoints(endpoints, dns)
        return endpoints


class HashOn(Model):
    header: HeaderName | None = None
    cookie: str | None = None
    client_ip: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_key(self) -> HashOn:
        exactly_one(self, ("header", "cookie", "clientIp"))
        return self


class LoadBalancer(Model):
    policy: Literal["round_robin", "least_request", "random", "ring_hash"] = "round_robin"
    hash_on: HashOn | None = None
    # Below this percentage of usable endpoints, balance over all of them (panic mode).
    panic_threshold: Annotated[float, Field(ge=0, le=100)] = 50.0

    @model_validator(mode="after")
    def _hash_on_for_ring_hash(self) -> LoadBalancer:
        if self.policy == "ring_hash" and self.hash_on is None:
            raise invalid("hash_on", "ring_hash needs hashOn (header, cookie or clientIp)")
        if self.policy != "ring_hash" and self.hash_on is not None:
            raise invalid("hash_on", "hashOn is only used with policy ring_hash")
        return self


class ConnectionPool(Model):
    max_connections_per_endpoint: int = Field(default=1024, ge=1)
    max_idle_per_endpoint: int = Field(default=128, ge=0)


class ActiveHealthCheck(Model):
    # grpc: grpc.health.v1.Health/Check over HTTP/2 (an Upstream with protocol: HTTP2)
    type: Literal["http", "tcp", "grpc"] = "http"
    path: str = "/healthz"
    service: str = ""  # grpc: the service asked about ("": the server as a whole)
    host: str | None = None
    expected_statuses: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200]
    )
    interval: Duration = 5.0
    interval_jitter: Duration | None = None  # default: 10% of interval
    timeout: Duration = 1.0
    healthy_threshold: Annotated[int, Field(ge=1)] = 2
    unhealthy_threshold: Annotated[int, Field(ge=1)] = 3


class PassiveHealthCheck(Model):
    """Outlier detection: eject an endpoint after consecutive errors (5xx answers, connect
    failures, resets) for ``baseEjectionTime`` x the number of times it was ejected."""

    consecutive_errors: Annotated[int, Field(ge=1)] = 5
    base_ejection_time: Duration = 30.0
    max_ejection_time: Duration = 300.0
    max_ejection_percent: Annotated[float, Field(ge=0, le=100)] = 50.0


class HealthCheck(Model):
    active: ActiveHealthCheck | None = None
    passive: PassiveHealthCheck | None = None


class CircuitBreaker(Model):
    """Over a limit the gateway answers 503 at once (``x-propylon-overloaded`` says which)."""

    max_connections: Annotated[int, Field(ge=1)] = 1024  # open to the whole upstream
    max_pending_requests: Annotated[int, Field(ge=0)] = 1024  # waiting for a connection
    max_requests: Annotated[int, Field(ge=1)] = 1024  # in flight


class UpstreamTLS(Model):
    """TLS origination to the endpoints (the service-mesh edge): server verification against
    ``caFile`` (the system's CAs when absent), ``sni`` as the server name, and a client
    certificate when ``certFile``/``keyFile`` are given (mTLS)."""

    sni: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> UpstreamTLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise invalid("cert_pair", "certFile and keyFile go together")
        return self


class UpstreamProxyProtocol(Model):
    """A PROXY protocol header (HAProxy's) at the start of every new connection to the
    endpoints, naming the client whose request opened it."""

    version: Literal[1, 2]


class UpstreamSpec(Model):
    dns: Dns | None = None  # before endpoints: their validator reads it
    endpoints: list[Endpoint] = Field(default_factory=list, validate_default=True)  # or dns.srv
    # Priority groups after ``endpoints`` (priority 0), as Envoy's priority levels: group N+1
    # takes the share of traffic that the groups before it are short of ``failoverThreshold``.
    failover: list[EndpointGroup] = Field(default_factory=list)
    failover_threshold: Annotated[float, Field(ge=0, le=100)] = 70.0
    load_balancer: LoadBalancer = Field(default_factory=LoadBalancer)
    connect_timeout: Duration = 5.0
    idle_timeout: Duration = 60.0
    connection_pool: ConnectionPool = Field(default_factory=ConnectionPool)
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    circuit_breaker: CircuitBreaker | None = None
    tls: UpstreamTLS | None = None
    proxy_protocol: UpstreamProxyProtocol | None = None
    # HTTP2: h2 over TLS (ALPN h2) when tls is set, h2c with prior knowledge otherwise
    protocol: Literal["HTTP1", "HTTP2"] = "HTTP1"
    # Namespaces whose Routes and RouteTables may forward (or mirror) to this Upstream, besides
    # its own: a grant, like a Gateway API ReferenceGrant. "*" grants every namespace.
    allowed_namespaces: list[NamespaceGrant] = Field(default_factory=list)

    @field_validator("endpoints")
    @classmethod
    def _endpoints_or_srv(cls, endpoints: list[Endpoint], info: ValidationInfo
                          ) -> list[Endpoint]:
        if "dns" in info.data:  # else dns was refused, with its own error
            _check_endpoints(endpoints, info.data["dns"])
        return endpoints

    @model_validator(mode="after")
    def _failover_endpoints(self) -> UpstreamSpec:
        inherited = self.dns.model_copy(update={"srv": None}) if self.dns else None
        for index, group in enumerate(self.failover):
            if group.dns is None or group.dns.srv is None:
                _check_endpoints(group.endpoints, group.dns or inherited, f"failover[{index}].")
        return self

    @model_validator(mode="after")
    def _http2_without_proxy_protocol(self) -> UpstreamSpec:
        if self.protocol == "HTTP2" and self.proxy_protocol is not None:
            raise invalid(
                "http2_proxy_protocol",
                "proxyProtocol is not supported with protocol HTTP2 yet (a PROXY header names"
                " one client, an HTTP/2 connection carries many)",
            )
        active = self.health_check.active
        if active is not None and active.type == "grpc" and self.protocol != "HTTP2":
            raise invalid("grpc_health_http1",
                          "healthCheck.active.type grpc needs protocol: HTTP2 (gRPC is HTTP/2)")
        return self
