"""Policy sections: what a Gateway's ``policies[]`` item, a rule's ``policies[]`` item and a
``Policy`` resource's spec have in common.

Their fields are the rows of the policy type table (``propylon/policies/table.py``): one
optional field per type, named as the type (``ipFilter``) and validated with the type's
section model (``propylon.policies``). A type without an implementation yet rejects any value
with ``policy "<name>" is not supported yet`` instead of being silently ignored. Plugins'
sections come in one more field, ``plugins`` (``propylon/config/plugin.py``): a list of
``{name, config}`` whose name is the policy type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_snake

from propylon.config.plugin import PluginSection, unique_plugins
from propylon.policies.auth import ConsumerRestriction
from propylon.policies.headers import (
    GATEWAY_OWNED_HEADERS,
    GATEWAY_OWNED_PREFIXES,
    HeaderEdits,
    HeadersPolicy,
    SecretHeaderValue,
    gateway_owned,
)
from propylon.policies.table import POLICY_TYPES
from propylon.schema import Model, invalid

__all__ = [
    "GATEWAY_OWNED_HEADERS",
    "GATEWAY_OWNED_PREFIXES",
    "ConsumerRestriction",
    "GatewayPolicyItem",
    "HeaderEdits",
    "HeadersPolicy",
    "PluginSection",
    "PolicyItem",
    "PolicySections",
    "SecretHeaderValue",
    "gateway_owned",
]

# policy type -> attribute name ("ipFilter" -> "ip_filter"), in the table's order
_ATTRIBUTES: dict[str, str] = {kind.name: to_snake(kind.name) for kind in POLICY_TYPES}
_TYPES: dict[str, str] = {attribute: name for name, attribute in _ATTRIBUTES.items()}
_SECTIONS = frozenset(_ATTRIBUTES.values())
_RESERVED: tuple[str, ...] = tuple(
    _ATTRIBUTES[kind.name] for kind in POLICY_TYPES if kind.section_model is None)


class SectionsBase(Model):
    """The behaviour of ``PolicySections``; its fields come from the table, but ``plugins``."""

    plugins: list[PluginSection] | None = None

    _unique_plugins = field_validator("plugins")(unique_plugins)

    def sections(self) -> list[tuple[str, BaseModel]]:
        """The sections that are set, as ``(policy type, section)``: built-in ones in
        ``POLICY_ORDER``, then each plugin's (its name, its validated config)."""
        return [
            (name, section)
            for name, attribute in _ATTRIBUTES.items()
            if (section := getattr(self, attribute)) is not None
        ] + [(item.name, item.config) for item in self.plugins or ()]

    def section(self, policy_type: str) -> BaseModel | None:
        """The section of ``policy_type`` (``"apiKey"``, or a plugin's name), None when it is
        not set."""
        attribute = _ATTRIBUTES.get(policy_type)
        if attribute is None:
            return next((item.config for item in self.plugins or ()
                         if item.name == policy_type), None)
        section: BaseModel | None = getattr(self, attribute)
        return section


def _not_supported(value: Any, info: ValidationInfo) -> Any:
    name = _TYPES[info.field_name or ""]
    raise invalid("not_supported", f'policy "{name}" is not supported yet')


def _section_field(model: type[BaseModel] | None, name: str) -> tuple[Any, Any]:
    return (Any if model is None else model | None), Field(default=None, alias=name)


if TYPE_CHECKING:  # the checker sees the base; sections are read with section() / sections()
    PolicySections = SectionsBase
else:
    PolicySections = create_model(
        "PolicySections",
        __base__=SectionsBase,
        __module__=__name__,
        __doc__="One optional field per policy type of the table, None when not set.",
        __validators__={
            "_not_supported": field_validator(*_RESERVED, mode="before")(_not_supported)
        } if _RESERVED else None,
        **{_ATTRIBUTES[k.name]: _section_field(k.section_model, k.name) for k in POLICY_TYPES},
    )


class PolicyItem(PolicySections):
    """One item of a ``policies[]`` list: sections, at least one."""

    @model_validator(mode="after")
    def _not_empty(self) -> PolicyItem:
        # sections() not empty, asked of the fields given only (every other one is None)
        fields = self.__dict__
        given = self.__pydantic_fields_set__ & _SECTIONS
        if not fields["plugins"] and all(fields[name] is None for name in given):
            raise invalid("empty_policy", "a policy item needs at least one policy section")
        return self


class GatewayPolicyItem(PolicyItem):
    """A Gateway's inline policy item; ``enforced`` makes it win over routes' own policies."""

    enforced: bool = False
