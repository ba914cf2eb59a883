"""Shared building blocks of the resource models: the base model and checked scalar types.

All models forbid unknown fields, are frozen, and read camelCase YAML names into snake_case
attributes (``statusCode`` -> ``status_code``). Validators raise ``PydanticCustomError`` so the
message reaches the user without pydantic's "Value error, " prefix.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from propylon.config.duration import parse_duration

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_HOST_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.IGNORECASE)
# RFC 9110 token characters: what a header name may contain.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        coerce_numbers_to_str=True,
    )


def invalid(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def not_supported(name: str) -> PydanticCustomError:
    return PydanticCustomError("not_supported", f'"{name}" is not supported yet')


def exactly_one(model: BaseModel, names: tuple[str, ...]) -> None:
    """Raise unless exactly one of the (aliased) fields ``names`` is set on ``model``."""
    given = [n for n in names if getattr(model, _snake(n)) is not None]
    if len(given) != 1:
        choices = ", ".join(names)
        found = f" (found {', '.join(given)})" if given else ""
        raise invalid("exactly_one", f"exactly one of {choices} is required{found}")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _check_name(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise invalid(
            "name", f'invalid name "{value}": lower-case letters, digits and "-", at most 63'
        )
    return value


def _check_hostname(value: str) -> str:
    host = value.lower()
    labels = host[2:].split(".") if host.startswith("*.") else host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise invalid("hostname", f'invalid hostname "{value}": use "example.com" or "*.suffix"')
    return host


def _check_header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise invalid("header_name", f'invalid header name "{value}"')
    return value.lower()


def _check_header_value(value: str) -> str:
    if any(ch in value for ch in "\r\n\0"):
        raise invalid("header_value", "header values may not contain CR, LF or NUL")
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise invalid("path", f'invalid path "{value}": must start with "/"')
    return value


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise invalid("ip", f'invalid IP address "{value}"') from None


def _check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise invalid("cidr", f'invalid CIDR "{value}"') from None


def _check_method(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise invalid("method", f'invalid HTTP method "{value}"')
    return value.upper()


def _to_duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise invalid("duration", str(exc)) from None


def _to_limit(value: Any) -> float:
    try:
        return parse_duration(value, allow_zero=True)
    except ValueError as exc:
        raise invalid("duration", str(exc)) from None


Name = Annotated[str, AfterValidator(_check_name)]
Hostname = Annotated[str, AfterValidator(_check_hostname)]
HeaderName = Annotated[str, AfterValidator(_check_header_name)]
HeaderValue = Annotated[str, AfterValidator(_check_header_value)]
UrlPath = Annotated[str, AfterValidator(_check_path)]
IPAddress = Annotated[str, AfterValidator(_check_ip)]
CIDR = Annotated[str, AfterValidator(_check_cidr)]
Method = Annotated[str, AfterValidator(_check_method)]
Duration = Annotated[float, BeforeValidator(_to_duration)]
# A duration where 0s means "no limit".
OptionalLimit = Annotated[float, BeforeValidator(_to_limit)]
Port = Annotated[int, Field(ge=1, le=65535)]
Weight = Annotated[int, Field(ge=0, le=1000)]
StatusCode = Annotated[int, Field(ge=100, le=599)]
Labels = dict[str, str]


class Selector(Model):
    """Chooses resources: ``namespaces`` (``["*"]`` = all; omitted = the selecting resource's
    own namespace) and ``matchLabels`` (all must match)."""

    namespaces: list[str] | None = None
    match_labels: Labels = Field(default_factory=dict)


# Tags of tagged unions (a plain value or a mapping); they never appear in error locations.
UNION_TAGS = frozenset({"<plain>", "<mapping>"})


def plain_or_mapping(value: Any) -> str:
    """The tag of a value in a union of a scalar type and a model (see ``UNION_TAGS``)."""
    return "<mapping>" if isinstance(value, dict | BaseModel) else "<plain>"
