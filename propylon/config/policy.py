"""Policy sections: the implemented policy types, and the section names not supported yet.

A ``PolicySections`` model is what a Gateway's ``policies[]`` item, a rule's ``policies[]``
item and a ``Policy`` resource's spec have in common. Every policy type of DESIGN §2 is a
field here; the ones without an implementation reject any value with
``policy "<name>" is not supported yet`` instead of being silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from propylon.config._types import (
    CIDR,
    Duration,
    HeaderName,
    HeaderValue,
    Method,
    Model,
    StatusCode,
    exactly_one,
    invalid,
    plain_or_mapping,
)
from propylon.config.consumer import SecretRef

# (attribute name, policy type) of every implemented section, in POLICY_ORDER.
SUPPORTED_POLICIES: tuple[tuple[str, str], ...] = (
    ("ip_filter", "ipFilter"),
    ("cors", "cors"),
    ("jwt", "jwt"),
    ("api_key", "apiKey"),
    ("basic_auth", "basicAuth"),
    ("ext_auth", "extAuth"),
    ("rate_limit", "rateLimit"),
    ("request_limits", "requestLimits"),
    ("headers", "headers"),
    ("fault_injection", "faultInjection"),
)
UNSUPPORTED_POLICIES: tuple[str, ...] = ("waf", "cache", "compression")

class SecretHeaderValue(Model):
    """A header value read from a secret at translation (e.g. an egress credential); the
    secret reaches the upstream only, never a log, an admin answer or the client."""

    secret_ref: SecretRef
    prefix: HeaderValue = ""  # e.g. "Bearer "


EditValue = Annotated[
    Annotated[HeaderValue, Tag("<plain>")] | Annotated[SecretHeaderValue, Tag("<mapping>")],
    Discriminator(plain_or_mapping),
]


class HeaderEdits(Model):
    """Header edits in one direction. Names are stored lower-case."""

    set: dict[HeaderName, EditValue] = Field(default_factory=dict)
    add: dict[HeaderName, EditValue] = Field(default_factory=dict)
    remove: list[HeaderName] = Field(default_factory=list)

    @field_validator("set", "add", mode="before")
    @classmethod
    def _no_case_duplicates(cls, value: Any) -> Any:
        if isinstance(value, dict):
            names = [str(k).lower() for k in value]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise invalid("duplicate_header", f"header {dupes[0]} is given twice")
        return value


# Request headers only the gateway writes: upstreams trust them to say who the client is, so a
# ``headers`` policy may not set or add them (it may remove them).
GATEWAY_OWNED_HEADERS: tuple[str, ...] = ("x-forwarded-client-cert", "x-request-id")
GATEWAY_OWNED_PREFIXES: tuple[str, ...] = ("x-consumer-",)


def gateway_owned(name: str) -> bool:
    name = name.lower()
    return name in GATEWAY_OWNED_HEADERS or name.startswith(GATEWAY_OWNED_PREFIXES)


class HeadersPolicy(Model):
    request: HeaderEdits = Field(default_factory=HeaderEdits)
    response: HeaderEdits = Field(default_factory=HeaderEdits)

    @field_validator("request")
    @classmethod
    def _no_gateway_owned(cls, edits: HeaderEdits) -> HeaderEdits:
        for op, values in (("set", edits.set), ("add", edits.add)):
            owned = sorted(name for name in values if gateway_owned(name))
            if owned:
                raise invalid(
                    "gateway_owned_header",
                    f"{op}: header {owned[0]} is set by the gateway and cannot be set by a "
                    "policy (x-consumer-*, x-forwarded-client-cert, x-request-id)",
                )
        return edits

    @model_validator(mode="after")
    def _no_secrets_to_clients(self) -> HeadersPolicy:
        edits = {**self.response.set, **self.response.add}
        if any(isinstance(v, SecretHeaderValue) for v in edits.values()):
            raise invalid("secret_response", "secretRef values are only allowed on requests")
        return self


# -- security and traffic policies (one model per section; names as in docs/policies.md) --------

_DESCRIPTOR = re.compile(
    r"(client_ip|consumer|path|route)|(header|label):[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
)


class TokenSource(Model):
    """Where a JWT is read from: a header (with a prefix to strip) or a cookie."""

    header: HeaderName | None = None
    prefix: str = ""
    cookie: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> TokenSource:
        exactly_one(self, ("header", "cookie"))
        return self


JwtAlgorithm = Literal["RS256", "ES256", "EdDSA", "HS256"]


def _asymmetric() -> list[JwtAlgorithm]:
    return ["RS256", "ES256", "EdDSA"]


class JwtKeyFile(Model):
    """A verification key read by each proxy when it compiles the configuration."""

    file: str = Field(min_length=1)
    kid: str | None = None
    algorithm: JwtAlgorithm | None = None


def _https_only(ca_file: str | None, info: ValidationInfo) -> str | None:
    url = info.data.get("url")  # absent when the url itself is invalid
    if ca_file is not None and url is not None and not url.startswith("https://"):
        raise invalid("ca_file", "caFile is only used with an https:// url")
    return ca_file


class JwksSource(Model):
    """The JWKS endpoint; an ``https`` one is verified against ``caFile`` (PEM, relative to
    the defining file) or the system's CAs, with the URL's host as the server name."""

    url: str = Field(pattern=r"^https?://")
    cache_duration: Duration = 300.0  # when the answer has no Cache-Control max-age
    min_refresh_interval: Duration = 5.0  # between fetches caused by unknown key ids
    timeout: Duration = 5.0
    ca_file: str | None = Field(default=None, min_length=1)

    _ca_needs_https = field_validator("ca_file")(_https_only)


class ClaimHeader(Model):
    claim: str = Field(min_length=1)
    header: HeaderName


class JwtPolicy(Model):
    jwks: JwksSource | None = None
    keys: list[JwtKeyFile] = Field(default_factory=list)
    algorithms: list[JwtAlgorithm] = Field(default_factory=_asymmetric)
    issuer: str | None = None
    audiences: list[str] = Field(default_factory=list)
    clock_skew: Duration = 30.0
    required_claims: list[str] = Field(default_factory=list)
    claims_to_headers: list[ClaimHeader] = Field(default_factory=list)
    token_from: list[TokenSource] = Field(
        default_factory=lambda: [TokenSource(header="authorization", prefix="Bearer ")]
    )
    forward_token: bool = True
    realm: str = "propylon"

    @model_validator(mode="after")
    def _keys(self) -> JwtPolicy:
        if (self.jwks is None) == (not self.keys):
            raise invalid("jwt_keys", "exactly one of jwks, keys is required")
        return self


def _check_consumer_ref(value: str) -> str:
    namespace, slash, name = value.rpartition("/")
    for part in (namespace, name) if slash else (name,):
        if len(part) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", part):
            raise invalid("consumer_ref",
                          f'invalid Consumer "{value}": use name or namespace/name')
    return value


# A Consumer: "name" (any namespace) or "namespace/name" (that one only).
ConsumerRef = Annotated[str, AfterValidator(_check_consumer_ref)]


def _one_or_many(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


# A label's accepted values: one value or a list of them, stored as a list.
LabelValues = Annotated[list[str], BeforeValidator(_one_or_many), Field(min_length=1)]


class ConsumerRestriction(Model):
    """Which authenticated consumers an auth policy lets through (403 for the others); the
    shape of Kong's ``acl`` and APISIX's ``consumer-restriction``, by name and by label.

    A consumer named in ``deny`` or carrying a ``denyLabels`` value is refused. Then, when
    ``allow`` or ``allowLabels`` is given, only a consumer named in ``allow`` or whose labels
    match every ``allowLabels`` entry (its value one of the listed) passes."""

    allow: list[ConsumerRef] | None = Field(default=None, min_length=1)
    deny: list[ConsumerRef] | None = Field(default=None, min_length=1)
    allow_labels: dict[str, LabelValues] | None = Field(default=None, min_length=1)
    deny_labels: dict[str, LabelValues] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _something(self) -> ConsumerRestriction:
        if not (self.allow or self.deny or self.allow_labels or self.deny_labels):
            raise invalid("empty_restriction",
                          "consumers needs allow, deny, allowLabels or denyLabels")
        return self


class ConsumerHeaders(Model):
    """Upstream headers naming the authenticated consumer (client-sent copies are removed)."""

    name: HeaderName = "x-consumer-name"
    labels: HeaderName = "x-consumer-labels"


class ApiKeyPolicy(Model):
    header: HeaderName | None = None
    query: str | None = Field(default=None, min_length=1)
    consumer_headers: ConsumerHeaders = Field(default_factory=ConsumerHeaders)
    consumers: ConsumerRestriction | None = None

    @model_validator(mode="after")
    def _where(self) -> ApiKeyPolicy:
        if self.header is None and self.query is None:
            return self.model_copy(update={"header": "x-api-key"})
        return self


class BasicAuthPolicy(Model):
    realm: str = "propylon"
    consumer_headers: ConsumerHeaders = Field(default_factory=ConsumerHeaders)
    consumers: ConsumerRestriction | None = None


class ExtAuthCache(Model):
    ttl: Duration
    key_headers: list[HeaderName] = Field(min_length=1)
    max_entries: int = Field(default=10000, ge=1)


class ExtAuthPolicy(Model):
    """An ``https`` service is verified against ``caFile`` (PEM, relative to the defining
    file) or the system's CAs, with the URL's host as the server name."""

    url: str = Field(pattern=r"^https?://")
    timeout: Duration = 1.0
    fail_open: bool = False
    status_on_error: StatusCode = 403
    headers_to_auth: list[HeaderName] = Field(
        default_factory=lambda: ["authorization", "cookie"]
    )
    upstream_headers: list[HeaderName] = Field(default_factory=list)
    client_headers: list[HeaderName] = Field(default_factory=list)
    cache: ExtAuthCache | None = None
    max_connections: int = Field(default=64, ge=1)
    ca_file: str | None = Field(default=None, min_length=1)

    _ca_needs_https = field_validator("ca_file")(_https_only)


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
    max_age: Duration | None = None

    @model_validator(mode="after")
    def _credentials(self) -> CorsPolicy:
        if self.allow_credentials and "*" in self.allow_origins:
            raise invalid("cors", 'allowCredentials cannot be used with allowOrigins "*"')
        return self


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


class RedisSettings(Model):
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
    status: StatusCode = 503
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


class PolicySections(Model):
    headers: HeadersPolicy | None = None
    jwt: JwtPolicy | None = None
    api_key: ApiKeyPolicy | None = None
    basic_auth: BasicAuthPolicy | None = None
    ext_auth: ExtAuthPolicy | None = None
    ip_filter: IpFilterPolicy | None = None
    rate_limit: RateLimitPolicy | None = None
    cors: CorsPolicy | None = None
    waf: Any = None
    request_limits: RequestLimitsPolicy | None = None
    cache: Any = None
    compression: Any = None
    fault_injection: FaultInjectionPolicy | None = None

    @field_validator("waf", "cache", "compression", mode="before")
    @classmethod
    def _not_supported(cls, value: Any, info: ValidationInfo) -> Any:
        alias = cls.model_fields[info.field_name or ""].alias
        raise invalid("not_supported", f'policy "{alias}" is not supported yet')

    def sections(self) -> list[tuple[str, Model]]:
        """The sections that are set, as ``(policy type, section)`` in ``POLICY_ORDER``."""
        return [
            (kind, section)
            for name, kind in SUPPORTED_POLICIES
            if (section := getattr(self, name)) is not None
        ]


class PolicyItem(PolicySections):
    """One item of a ``policies[]`` list: sections, at least one."""

    @model_validator(mode="after")
    def _not_empty(self) -> PolicyItem:
        if not self.sections():
            raise invalid("empty_policy", "a policy item needs at least one policy section")
        return self


class GatewayPolicyItem(PolicyItem):
    """A Gateway's inline policy item; ``enforced`` makes it win over routes' own policies."""

    enforced: bool = False
