"""The Gateway model: listeners, route selection, Gateway-wide policies, trusted proxies,
tracing, progressive rollout."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from propylon.config._types import (
    CIDR,
    Duration,
    Hostname,
    IPAddress,
    Model,
    Name,
    Port,
    Selector,
    StatusCode,
    invalid,
)
from propylon.config.policy import GatewayPolicyItem


class ListenerLimits(Model):
    """Protections of one listener against slow or oversized clients (defaults as nginx and
    Envoy recommend for an edge)."""

    max_request_line_bytes: Annotated[int, Field(ge=256, le=1048576)] = 8192
    max_header_bytes: Annotated[int, Field(ge=1024, le=1048576)] = 61440
    max_header_count: Annotated[int, Field(ge=8, le=10000)] = 100
    reject_underscore_headers: bool = True
    header_read_timeout: Duration = 10.0
    keep_alive_timeout: Duration = 60.0
    stream_idle_timeout: Duration = 300.0
    max_connections: Annotated[int, Field(ge=1, le=1000000)] = 10000


class PathNormalization(Model):
    """How request paths are normalised before routing; the normalised path is forwarded.
    ``enabled: false`` routes and forwards the raw path (for upstreams that need it)."""

    enabled: bool = True
    merge_slashes: bool = True
    escaped_slashes: Literal["reject", "keep", "unescape"] = "reject"
    path_parameters: Literal["keep", "strip", "reject"] = "keep"


class ProxyProtocol(Model):
    """Reading the PROXY protocol (HAProxy's) that an L4 balancer writes before HTTP: the
    address it carries becomes the client address. Only ``trustedSources`` may send one."""

    mode: Literal["off", "optional", "required"] = "off"
    versions: list[Literal[1, 2]] = Field(default_factory=lambda: [1, 2], min_length=1)  # type: ignore[arg-type]
    trusted_sources: list[CIDR] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sources_named(self) -> ProxyProtocol:
        if self.mode != "off" and not self.trusted_sources:
            raise invalid(
                "proxy_protocol_sources",
                "proxyProtocol needs trustedSources (the balancers' CIDRs; 0.0.0.0/0 and ::/0"
                " trust any peer)",
            )
        return self


@dataclass(frozen=True, slots=True)
class InlineCertificate:
    """A chain and its key as PEM, read from a Kubernetes ``kubernetes.io/tls`` Secret by
    conversion (``config/k8s_secrets.py``); never written in YAML."""

    certificate_pem: str
    private_key: str = field(repr=False)
    source: str = ""  # "Secret namespace/name"


@dataclass(frozen=True, slots=True)
class ListenerSections:
    """How a Gateway converted from a Gateway API Gateway serves some routes on some of its
    listeners only (``parentRefs[].sectionName`` / ``port``, or listeners that do not all
    admit the route): the Gateway API listeners each of its listeners (one per port) stands
    for. Each such Route says which it is served on (``Route.served_on``), so a route added
    or changed leaves the Gateway as it was. Set by conversion (``config/gatewayapi.py``),
    never written in YAML; None on a Gateway whose routes are each served on all its
    listeners."""

    # listener name -> its sections: (Gateway API listener name, hostname or None)
    listeners: dict[str, tuple[tuple[str, str | None], ...]]


class Certificate(Model):
    """A PEM certificate chain and its key; relative paths are relative to the YAML file.
    A certificate converted from a Secret carries the PEM (``inline``) and its two paths
    only name the Secret."""

    cert_file: str
    key_file: str
    _inline: InlineCertificate | None = PrivateAttr(default=None)

    @property
    def inline(self) -> InlineCertificate | None:
        return self._inline

    @classmethod
    def of_secret(cls, inline: InlineCertificate) -> Certificate:
        certificate = cls(cert_file=inline.source, key_file=inline.source)
        certificate._inline = inline
        return certificate


class ClientValidation(Model):
    """mTLS: client certificates are verified against ``caFile``."""

    ca_file: str
    mode: Literal["required", "optional"] = "required"


class ListenerTLS(Model):
    certificates: list[Certificate] = Field(min_length=1)
    client_validation: ClientValidation | None = None


class Listener(Model):
    name: Name
    port: Port
    protocol: Literal["HTTP", "HTTPS"] = "HTTP"
    address: IPAddress = "0.0.0.0"
    hostnames: list[Hostname] = Field(default_factory=list)
    limits: ListenerLimits = Field(default_factory=ListenerLimits)
    tls: ListenerTLS | None = None
    path_normalization: PathNormalization = Field(default_factory=PathNormalization)
    proxy_protocol: ProxyProtocol = Field(default_factory=ProxyProtocol)
    # HTTP/2: offered with ALPN h2 on HTTPS, accepted with prior knowledge (h2c) on HTTP
    http2: bool = True

    @model_validator(mode="after")
    def _tls_matches_protocol(self) -> Listener:
        if self.protocol == "HTTPS" and self.tls is None:
            raise invalid("tls_required", "an HTTPS listener needs tls.certificates")
        if self.protocol == "HTTP" and self.tls is not None:
            raise invalid("tls_on_http", "tls is only allowed with protocol: HTTPS")
        return self


class InvalidRouteResponse(Model):
    status: StatusCode = 500
    body: str = "route unavailable"


class Tracing(Model):
    """OpenTelemetry traces of this Gateway's requests (docs/operations.md, "Tracing").
    Unset fields fall back to the proxy's ``OTEL_*`` environment variables, then to the
    OpenTelemetry defaults (``http://localhost:4318/v1/traces``, every trace sampled)."""

    otlp_endpoint: str | None = None  # OTLP/HTTP; a URL without a path gets /v1/traces
    sampling: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # ratio of new traces
    service_name: Annotated[str, Field(min_length=1, max_length=255)] | None = None

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None:
            scheme, _, rest = url.partition("://")
            if scheme not in ("http", "https") or not rest or rest.startswith("/"):
                raise invalid("otlp_endpoint",
                              "otlpEndpoint must be an http:// or https:// URL with a host")
        return url


class Rollout(Model):
    """Progressive rollout of new IR versions through the control plane (docs/controlplane.md,
    "Progressive rollout"): a new version goes to ``steps[i]`` percent of the connected
    proxies, one step per ``interval``; it is rolled back when its 5xx ratio exceeds the
    ratio of the proxies on the previous version by more than ``maxErrorRatio``, judged once
    the new version has served ``minRequests`` requests."""

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 50, 100], min_length=1, max_length=20)
    interval: Duration = 30.0
    max_error_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    min_requests: Annotated[int, Field(ge=0, le=1_000_000_000)] = 100

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in pairwise(steps)) or steps[-1] != 100:
            raise invalid("rollout_steps", "rollout steps must increase and end at 100")
        return steps


class GatewaySpec(Model):
    listeners: list[Listener] = Field(min_length=1)
    route_selector: Selector = Field(default_factory=Selector)
    policies: list[GatewayPolicyItem] = Field(default_factory=list)
    trusted_proxies: list[CIDR] = Field(default_factory=list)
    invalid_route_response: InvalidRouteResponse = Field(default_factory=InvalidRouteResponse)
    tracing: Tracing | None = None
    rollout: Rollout | None = None  # None: a new version goes to every proxy at once

    @field_validator("listeners")
    @classmethod
    def _unique_listeners(cls, listeners: list[Listener]) -> list[Listener]:
        names = [lst.name for lst in listeners]
        for name in names:
            if names.count(name) > 1:
                raise invalid("duplicate_listener", f'listener name "{name}" is used twice')
        binds = [(lst.address, lst.port) for lst in listeners]
        for address, port in binds:
            if binds.count((address, port)) > 1:
                raise invalid("duplicate_port", f"port {port} is used twice on {address}")
        return listeners
