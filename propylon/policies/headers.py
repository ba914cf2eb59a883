"""Settings of the ``headers`` policy, in two forms.

``HeadersPolicy`` is the section as written (YAML, admin API): a value may be a
``secretRef``. Translation reads those secrets, so the IR, and the ``HeadersSettings`` a
filter is built from, carry the value instead (``{"secret": value}``) or the reason it could
not be read (``{"secretError": reason}``, and the filter refuses requests rather than send
them without their credential).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from propylon.schema import (
    HeaderName,
    HeaderValue,
    Model,
    SecretRef,
    invalid,
    plain_or_mapping,
)


class SecretHeaderValue(Model):
    """A header value read from a secret at translation (e.g. an egress credential); the
    secret reaches the upstream only, never a log, an admin answer or the client."""

    secret_ref: SecretRef
    prefix: HeaderValue = ""  # e.g. "Bearer "


EditValue = Annotated[
    Annotated[HeaderValue, Tag("<plain>")] | Annotated[SecretHeaderValue, Tag("<mapping>")],
    Discriminator(plain_or_mapping),
]


def _no_case_duplicates(value: Any) -> Any:
    if isinstance(value, dict):
        names = [str(k).lower() for k in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise invalid("duplicate_header", f"header {dupes[0]} is given twice")
    return value


class HeaderEdits(Model):
    """Header edits in one direction. Names are stored lower-case."""

    set: dict[HeaderName, EditValue] = Field(default_factory=dict)
    add: dict[HeaderName, EditValue] = Field(default_factory=dict)
    remove: list[HeaderName] = Field(default_factory=list)

    _unique = field_validator("set", "add", mode="before")(_no_case_duplicates)


# Request headers only the gateway writes: upstreams trust them to say who the client is, so no
# policy may write them upstream: not a ``headers`` policy (it may remove them), not
# ``jwt.claimsToHeaders``, not ``extAuth.upstreamHeaders``. The consumer headers of ``apiKey``
# and ``basicAuth`` (``consumerHeaders``) are the gateway's own and are not checked.
GATEWAY_OWNED_HEADERS: tuple[str, ...] = ("x-forwarded-client-cert", "x-request-id")
GATEWAY_OWNED_PREFIXES: tuple[str, ...] = ("x-consumer-",)


def gateway_owned(name: str) -> bool:
    name = name.lower()
    return name in GATEWAY_OWNED_HEADERS or name.startswith(GATEWAY_OWNED_PREFIXES)


def gateway_owned_error(name: str) -> PydanticCustomError:
    owned = ", ".join([f"{p}*" for p in GATEWAY_OWNED_PREFIXES] + list(GATEWAY_OWNED_HEADERS))
    return invalid("gateway_owned_header",
                   f"header {name} is set by the gateway and cannot be set by a policy ({owned})")


def _not_gateway_owned(name: str) -> str:
    if gateway_owned(name):
        raise gateway_owned_error(name)
    return name


# A request header name a policy writes upstream (``jwt.claimsToHeaders[].header``,
# ``extAuth.upstreamHeaders[]``): never one the gateway owns.
UpstreamHeaderName = Annotated[HeaderName, AfterValidator(_not_gateway_owned)]


class HeadersPolicy(Model):
    request: HeaderEdits = Field(default_factory=HeaderEdits)
    response: HeaderEdits = Field(default_factory=HeaderEdits)

    @field_validator("request")
    @classmethod
    def _no_gateway_owned(cls, edits: HeaderEdits) -> HeaderEdits:
        for op, values in (("set", edits.set), ("add", edits.add)):
            owned = sorted(name for name in values if gateway_owned(name))
            if owned:
                error = gateway_owned_error(owned[0])
                raise invalid(error.type, f"{op}: {error.message()}")
        return edits

    @field_validator("response")
    @classmethod
    def _no_request_id(cls, edits: HeaderEdits) -> HeaderEdits:
        # every answer carries the request's id, once (the access log's request_id): an edit
        # of it would give the client two, or none it could match to the log
        for op, names in (("set", edits.set), ("add", edits.add), ("remove", edits.remove)):
            if "x-request-id" in names:
                raise invalid("gateway_owned_header", f"{op}: header x-request-id is set by "
                              "the gateway on every answer (the request's id, as logged) and "
                              "cannot be changed by a policy")
        return edits

    @model_validator(mode="after")
    def _no_secrets_to_clients(self) -> HeadersPolicy:
        edits = {**self.response.set, **self.response.add}
        if any(isinstance(v, SecretHeaderValue) for v in edits.values()):
            raise invalid("secret_response", "secretRef values are only allowed on requests")
        return self


# -- the settings form: secrets read ----------------------------------------------------------


class ResolvedSecret(Model):
    """A ``secretRef`` value after translation: the value to send (prefix included), or why
    it could not be read. ``SecretStr`` keeps the value out of reprs and logs."""

    secret: SecretStr | None = None
    secret_error: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ResolvedSecret:
        if (self.secret is None) == (self.secret_error is None):
            raise invalid("exactly_one", "exactly one of secret, secretError is required")
        return self


ResolvedValue = Annotated[
    Annotated[HeaderValue, Tag("<plain>")] | Annotated[ResolvedSecret, Tag("<mapping>")],
    Discriminator(plain_or_mapping),
]


class ResolvedHeaderEdits(Model):
    set: dict[HeaderName, ResolvedValue] = Field(default_factory=dict)
    add: dict[HeaderName, ResolvedValue] = Field(default_factory=dict)
    remove: list[HeaderName] = Field(default_factory=list)

    _unique = field_validator("set", "add", mode="before")(_no_case_duplicates)


class HeadersSettings(Model):
    """What the ``headers`` filter is built from: the IR's form of ``HeadersPolicy``."""

    request: ResolvedHeaderEdits = Field(default_factory=ResolvedHeaderEdits)
    response: ResolvedHeaderEdits = Field(default_factory=ResolvedHeaderEdits)
