"""Route and RouteTable models: hostnames, rules, matches and the four rule actions.

Regexes are plain strings here: they are compiled during translation, so a bad regex
invalidates only its own route instead of failing the whole configuration.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from propylon.config._types import (
    Duration,
    Hostname,
    Method,
    Model,
    Name,
    OptionalLimit,
    Port,
    Selector,
    StatusCode,
    UrlPath,
    Weight,
    exactly_one,
    invalid,
    shared,
)
from propylon.config.policy import PolicyItem

_UPSTREAM_REF = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?")
ACTIONS: tuple[str, ...] = ("forward", "redirect", "directResponse", "delegate")


class PathMatch(Model):
    exact: UrlPath | None = None
    prefix: UrlPath | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> PathMatch:
        exactly_one(self, ("exact", "prefix", "regex"))
        return self

    @property
    def kind(self) -> str:
        return (
            "exact" if self.exact is not None else "prefix" if self.prefix is not None else "regex"
        )

    @property
    def value(self) -> str:
        return self.exact or self.prefix or self.regex or ""


class ValueMatch(Model):
    """A header or query condition: exact ``value`` or full-match ``regex``."""

    name: str = Field(min_length=1)
    value: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ValueMatch:
        exactly_one(self, ("value", "regex"))
        return self


_GRPC_SERVICE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_GRPC_METHOD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# gRPC requests: application/grpc, application/grpc+proto, application/grpc+json ...
GRPC_CONTENT_TYPE = r"application/grpc(\+[-.\w]+)?(;.*)?"


class GrpcMatch(Model):
    """A gRPC call by its package-qualified ``service`` and, optionally, its ``method``."""

    service: str | None = None
    method: str | None = None


def grpc_path(service: str | None, method: str | None) -> dict[str, str]:
    """The path match of a gRPC call (``/package.Service/Method``)."""
    if service and method:
        return {"exact": f"/{service}/{method}"}
    if service:
        return {"prefix": f"/{service}"}
    return {"regex": f"/[^/]+/{method}"}


def _is_grpc_condition(header: object) -> bool:
    if isinstance(header, ValueMatch):
        return header.name == "content-type" and header.regex == GRPC_CONTENT_TYPE
    return (isinstance(header, dict) and header.get("name") == "content-type"
            and header.get("regex") == GRPC_CONTENT_TYPE)


class Match(Model):
    path: PathMatch = Field(default_factory=lambda: PathMatch(prefix="/"))
    method: Method | None = None
    headers: list[ValueMatch] = Field(default_factory=list)
    query: list[ValueMatch] = Field(default_factory=list)
    # sugar for a gRPC call: the path, POST and a gRPC content type (filled in below)
    grpc: GrpcMatch | None = None

    @model_validator(mode="before")
    @classmethod
    def _grpc_call(cls, data: object) -> object:
        if not isinstance(data, dict) or data.get("grpc") is None:
            return data
        grpc = data["grpc"]
        if isinstance(grpc, GrpcMatch):
            service, method = grpc.service, grpc.method
        elif isinstance(grpc, dict):
            service, method = grpc.get("service"), grpc.get("method")
        else:
            return data  # the field's own validation reports the wrong type
        if not service and not method:
            raise invalid("grpc_empty", "a grpc match needs a service, a method or both")
        if service is not None and not (
                isinstance(service, str) and _GRPC_SERVICE.fullmatch(service)):
            raise invalid("grpc_service", f"not a gRPC service name: {service!r}")
        if method is not None and not (
                isinstance(method, str) and _GRPC_METHOD.fullmatch(method)):
            raise invalid("grpc_method", f"not a gRPC method name: {method!r}")
        path = grpc_path(service, method)
        given = data.get("path")
        if isinstance(given, PathMatch):
            given = {given.kind: given.value}
        elif isinstance(given, dict):
            given = {k: v for k, v in given.items() if v is not None}
        if given is not None and given != path:
            raise invalid("grpc_with_path", "a grpc match names the path itself: give grpc or "
                          "path, not both")
        if data.get("method") not in (None, "POST"):
            raise invalid("grpc_method_post", "gRPC calls are POST requests")
        headers = list(data.get("headers") or [])
        if not any(_is_grpc_condition(h) for h in headers):
            headers.append({"name": "content-type", "regex": GRPC_CONTENT_TYPE})
        return {**data, "path": path, "method": "POST", "headers": headers}


class Backend(Model):
    upstream: str  # "name" (the owning resource's namespace) or "namespace/name"
    weight: Weight = 1
    # the upstream named could not be resolved (a Gateway API backendRef that did not): this
    # backend's share of requests answers 500 and the name is not looked up
    unresolved: bool = False

    @field_validator("upstream")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not _UPSTREAM_REF.fullmatch(value):
            raise invalid(
                "upstream_ref", f'invalid upstream reference "{value}": use name or ns/name'
            )
        return value


class Rewrite(Model):
    prefix: UrlPath | None = None
    full_path: UrlPath | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Rewrite:
        exactly_one(self, ("prefix", "fullPath"))
        return self


RetryCondition = Literal[
    "connect-failure", "reset", "5xx", "gateway-error", "timeout",
    # gRPC answers (grpc-status of a Trailers-Only answer), Envoy's names
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
]


class Backoff(Model):
    base_interval: Duration = 0.025
    max_interval: Duration = 0.25


class RetryBudget(Model):
    """At most ``percent`` of an Upstream's active requests may be retries (never fewer than
    ``minConcurrency`` retries at once), so retries cannot multiply an outage."""

    percent: Annotated[float, Field(ge=0, le=100)] = 20.0
    min_concurrency: Annotated[int, Field(ge=0)] = 3


def _default_retry_conditions() -> list[RetryCondition]:
    return ["connect-failure", "reset"]


class Retries(Model):
    attempts: Annotated[int, Field(ge=1, le=10)] = 1  # retries after the first try
    on: list[RetryCondition] = Field(default_factory=_default_retry_conditions)
    statuses: list[StatusCode] = Field(default_factory=list)  # also retried
    per_try_timeout: Duration | None = None
    backoff: Backoff = Field(default_factory=Backoff)
    budget: RetryBudget = Field(default_factory=RetryBudget)


class Mirror(Model):
    """Copy requests to another upstream; its answers are ignored."""

    upstream: str = Field(min_length=1)
    percent: Annotated[float, Field(ge=0, le=100)] = 100.0


class Forward(Model):
    backends: list[Backend] = Field(min_length=1)
    rewrite: Rewrite | None = None
    timeout: OptionalLimit = 60.0  # the whole exchange; 0s: no deadline
    retries: Retries | None = None
    mirror: Mirror | None = None


class Redirect(Model):
    scheme: Literal["http", "https"] | None = None
    host: Hostname | None = None
    port: Port | None = None
    path: UrlPath | None = None
    # the matched path prefix replaced by this one (Gateway API ReplacePrefixMatch); only
    # with prefix matches, which every match of the rule must then be
    prefix: UrlPath | None = None
    status_code: Literal[301, 302, 303, 307, 308] = 302

    @model_validator(mode="after")
    def _one_path(self) -> Redirect:
        if self.path is not None and self.prefix is not None:
            raise invalid("redirect_path", "redirect: path and prefix exclude each other")
        return self


class DirectResponse(Model):
    status: StatusCode
    body: str = ""


class Delegate(Model):
    selector: Selector


class Rule(Model):
    name: Name | None = None
    matches: list[Match] = Field(default_factory=lambda: [Match()], min_length=1)
    forward: Annotated[Forward, shared("forward")] | None = None
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    delegate: Delegate | None = None
    policies: list[Annotated[PolicyItem, shared("policy")]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_action(self) -> Rule:
        exactly_one(self, ACTIONS)
        return self


def _unique_rule_names(rules: list[Rule]) -> list[Rule]:
    names = [r.name for r in rules if r.name is not None]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise invalid("duplicate_rule", f'rule name "{dupes[0]}" is used twice')
    return rules


class RouteTableSpec(Model):
    rules: list[Rule] = Field(min_length=1)

    _names = field_validator("rules")(_unique_rule_names)


class RouteSpec(RouteTableSpec):
    hostnames: list[Hostname] = Field(default_factory=list)
