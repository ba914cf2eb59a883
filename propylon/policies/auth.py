"""Settings of the auth policies: ``jwt``, ``apiKey``, ``basicAuth`` and ``extAuth``
(names and behaviour in docs/policies.md)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from propylon.policies.headers import UpstreamHeaderName
from propylon.schema import Duration, HeaderName, Model, StatusCode, exactly_one, invalid


def _check_realm(value: str) -> str:
    """A realm goes inside ``realm="..."`` of ``WWW-Authenticate``: printable ASCII without
    ``"`` or ``\\``, so it can neither end the quoted string (and add parameters of its own
    to the challenge) nor fail to encode in a header field."""
    if not re.fullmatch(r'[\x20-\x7e]*', value) or '"' in value or "\\" in value:
        raise invalid("realm", 'a realm is printable ASCII without " or \\')
    return value


# The realm of a 401 challenge (RFC 9110 §11.6.1, a quoted-string).
Realm = Annotated[str, AfterValidator(_check_realm)]


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


def _bearer() -> list[TokenSource]:
    return [TokenSource(header="authorization", prefix="Bearer ")]


def _empty_is_default(value: Any, info: ValidationInfo) -> Any:
    """An empty ``algorithms`` or ``tokenFrom`` list means the default one (as it always has)."""
    if value == []:
        return _asymmetric() if info.field_name == "algorithms" else _bearer()
    return value


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
    header: UpstreamHeaderName


class JwtPolicy(Model):
    jwks: JwksSource | None = None
    keys: list[JwtKeyFile] = Field(default_factory=list)
    algorithms: list[JwtAlgorithm] = Field(default_factory=_asymmetric)
    issuer: str | None = None
    audiences: list[str] = Field(default_factory=list)
    clock_skew: Duration = 30.0
    required_claims: list[str] = Field(default_factory=list)
    claims_to_headers: list[ClaimHeader] = Field(default_factory=list)
    token_from: list[TokenSource] = Field(default_factory=_bearer)
    forward_token: bool = True
    realm: Realm = "propylon"

    _defaults = field_validator("algorithms", "token_from", mode="before")(_empty_is_default)

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
    realm: Realm = "propylon"
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
    upstream_headers: list[UpstreamHeaderName] = Field(default_factory=list)
    client_headers: list[HeaderName] = Field(default_factory=list)
    cache: ExtAuthCache | None = None
    max_connections: int = Field(default=64, ge=1)
    ca_file: str | None = Field(default=None, min_length=1)

    _ca_needs_https = field_validator("ca_file")(_https_only)

    @model_validator(mode="after")
    def _cache_keys_seen(self) -> ExtAuthPolicy:
        """A cached decision is reused for every request with the same ``keyHeaders`` values:
        a key header the service is not sent cannot be what it decided on, and would let a
        request without the credential reuse the decision made for one with it."""
        if self.cache is not None:
            for name in self.cache.key_headers:
                if name not in self.headers_to_auth:
                    raise invalid("cache_key_header", (
                        f'cache.keyHeaders: "{name}" is not in headersToAuth (the service never '
                        "sees it, so a decision cannot be keyed on it)"))
        return self
