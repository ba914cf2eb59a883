"""Settings of the traffic policies: ``ipFilter``, ``cors``, ``rateLimit``,
``requestLimits`` and ``faultInjection`` (names and behaviour in docs/policies.md)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from propylon.policies.redis import RedisLogin
from propylon.schema import (
    CIDR,
    Duration,
    HeaderName,
    Method,
    Model,
    OptionalLimit,
    invalid,
)


class IpFilterPolicy(Model):
    allow: list[CIDR] = Field(default_factory=list)
    deny: list[CIDR] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some(self) -> IpFilterPolicy:
        if not self.allow and not self.deny:
            raise invalid("ip_filter", "ipFilter needs allow or deny CIDRs")
        return self


def _check_origin_pattern(value: str) -> str:
    if value != "*" and not re.fullmatch(r"https?://[^/?#\s]+", value):
        raise invalid("origin", f'invalid origin "{value}": use scheme://host[:port] or "*"')
    return value.lower()


OriginPattern = Annotated[str, AfterValidator(_check_origin_pattern)]


class CorsPolicy(Model):
    allow_origins: list[OriginPattern] = Field(min_length=1)
    allow_methods: list[Method] = Field(
        default_factory=lambda: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    )
    allow_headers: list[HeaderName] = Field(default_factory=list)
    expose_headers: list[HeaderName] = Field(default_factory=list)
    allow_credentials: bool = False
    # 0s is sent as ``Access-Control-Max-Age: 0``: browsers do not cache the preflight
    max_age: OptionalLimit | None = None

    @model_validator(mode="after")
    def _credentials(self) -> CorsPolicy:
        if self.allow_credentials and "*" in self.allow_origins:
            raise invalid("cors", 'allowCredentials cannot be used with allowOrigins "*"')
        return self


_DESCRIPTOR = re.compile(
    r"(client_ip|consumer|path|route)|(header|label):[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
)


def _check_descriptor(value: str) -> str:
    if not _DESCRIPTOR.fullmatch(value):
        raise invalid(
            "descriptor",
            f'invalid key "{value}": use client_ip, consumer, path, route, header:NAME '
            "or label:NAME",
        )
    kind, _, name = value.partition(":")
    return f"{kind}:{name.lower()}" if kind == "header" else value


Descriptor = Annotated[str, AfterValidator(_check_descriptor)]


class RateLimit(Model):
    requests: int = Field(ge=1)
    per: Duration
    burst: int | None = Field(default=None, ge=1)  # bucket size; default ``requests``
    key: list[Descriptor] = Field(default_factory=list)  # empty: one bucket for all


class RedisSettings(RedisLogin):
    address: str = "127.0.0.1:6379"
    cluster: bool = False
    timeout: Duration = 0.05
    prefix: str = "propylon:rl"


class RateLimitPolicy(Model):
    mode: Literal["local", "global"] = "local"
    limits: list[RateLimit] = Field(min_length=1)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    failure_mode: Literal["open", "closed"] = "open"
    response_headers: bool = False


class RequestLimitsPolicy(Model):
    max_body_size: int | None = Field(default=None, ge=0)
    max_header_size: int | None = Field(default=None, ge=1)


class FaultDelay(Model):
    fixed: Duration
    percent: Annotated[float, Field(ge=0, le=100)] = 100.0


class FaultAbort(Model):
    status: Annotated[int, Field(ge=200, le=599)] = 503  # an answer, not 1xx (Envoy's range)
    percent: Annotated[float, Field(ge=0, le=100)] = 100.0
    body: str = "fault injected"


class FaultInjectionPolicy(Model):
    """Delay and/or abort a percentage of requests, to test clients' resilience. The delay
    comes first; an aborted request never reaches the upstream."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _something(self) -> FaultInjectionPolicy:
        if self.delay is None and self.abort is None:
            raise invalid("empty_fault", "faultInjection needs delay, abort or both")
        return self
