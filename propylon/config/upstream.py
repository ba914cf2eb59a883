"""The Upstream model: endpoints, load balancing, timeouts and the connection pool."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from propylon.config._types import (
    Duration,
    HeaderName,
    Model,
    Port,
    Weight,
    exactly_one,
    invalid,
    not_supported,
)


class Endpoint(Model):
    address: str = Field(min_length=1)  # an IP address or a host name
    port: Port
    weight: Weight = 1


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


class UpstreamSpec(Model):
    endpoints: list[Endpoint] = Field(min_length=1)
    load_balancer: LoadBalancer = Field(default_factory=LoadBalancer)
    connect_timeout: Duration = 5.0
    idle_timeout: Duration = 60.0
    connection_pool: ConnectionPool = Field(default_factory=ConnectionPool)
    health_check: Any = None
    circuit_breaker: Any = None
    tls: UpstreamTLS | None = None

    @field_validator("health_check", "circuit_breaker", mode="before")
    @classmethod
    def _not_supported(cls, value: Any, info: ValidationInfo) -> Any:
        raise not_supported(cls.model_fields[info.field_name or ""].alias or "")
