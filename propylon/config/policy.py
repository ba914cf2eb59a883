"""Policy sections: the ``headers`` policy, and the section names that are not supported yet.

A ``PolicySections`` model is what a Gateway's ``policies[]`` item, a rule's ``policies[]``
item and a ``Policy`` resource's spec have in common. Every policy type of DESIGN §2 is a
field here; the ones without an implementation reject any value with
``policy "<name>" is not supported yet`` instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from propylon.config._types import HeaderName, HeaderValue, Model, invalid

SUPPORTED_POLICIES: tuple[str, ...] = ("headers",)
UNSUPPORTED_POLICIES: tuple[str, ...] = (
    "jwt",
    "apiKey",
    "basicAuth",
    "extAuth",
    "ipFilter",
    "rateLimit",
    "cors",
    "waf",
    "requestLimits",
    "cache",
    "compression",
    "faultInjection",
)


class HeaderEdits(Model):
    """Header edits in one direction. Names are stored lower-case."""

    set: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    add: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
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


class HeadersPolicy(Model):
    request: HeaderEdits = Field(default_factory=HeaderEdits)
    response: HeaderEdits = Field(default_factory=HeaderEdits)


class PolicySections(Model):
    headers: HeadersPolicy | None = None
    jwt: Any = None
    api_key: Any = None
    basic_auth: Any = None
    ext_auth: Any = None
    ip_filter: Any = None
    rate_limit: Any = None
    cors: Any = None
    waf: Any = None
    request_limits: Any = None
    cache: Any = None
    compression: Any = None
    fault_injection: Any = None

    @field_validator(
        "jwt",
        "api_key",
        "basic_auth",
        "ext_auth",
        "ip_filter",
        "rate_limit",
        "cors",
        "waf",
        "request_limits",
        "cache",
        "compression",
        "fault_injection",
        mode="before",
    )
    @classmethod
    def _not_supported(cls, value: Any, info: ValidationInfo) -> Any:
        alias = cls.model_fields[info.field_name or ""].alias
        raise invalid("not_supported", f'policy "{alias}" is not supported yet')

    def sections(self) -> list[tuple[str, Model]]:
        """The sections that are set, as ``(policy type, section)`` in declaration order."""
        return [
            (name, section)
            for name in SUPPORTED_POLICIES
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
