"""The ``plugins`` policy section: policy types of installed plugins, by name, with a config.

``plugins: [{name: NAME, config: {...}}]`` may stand in a Policy's spec and in any
``policies[]`` item, beside the built-in sections. ``name`` must be a plugin installed in
this process's environment (``propylon.policies.plugins``; the error names the installed
ones) or, on a control plane, one declared external. ``config`` is validated with the
plugin's settings model where it is written, so its errors are located at
``plugins[i].config.<field>`` like a built-in section's; an external plugin's config is kept
as written (``ExternalConfig``) and checked by the proxies.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, RootModel, ValidationInfo, field_validator

from propylon.policies.plugins import PluginError, installed_plugins
from propylon.schema import Model, invalid


class ExternalConfig(RootModel[dict[str, Any]]):
    """The config of a plugin this process does not have, passed on as written."""


class PluginSection(Model):
    """One item of ``plugins``: which plugin, and its config (its settings, validated)."""

    name: str
    config: Any = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _usable(cls, name: str) -> str:
        try:
            installed_plugins().settings_model(name)
        except PluginError as exc:
            raise invalid("unknown_plugin", str(exc)) from None
        return name

    @field_validator("config")
    @classmethod
    def _valid(cls, config: Any, info: ValidationInfo) -> Any:
        if not isinstance(config, dict):
            raise invalid("dict_type", "a plugin's config is a mapping")
        name = info.data.get("name")
        if name is None:
            return config  # the name was refused: that is the error
        model: type[BaseModel] | None = installed_plugins().settings_model(name)
        if model is None:
            return ExternalConfig(config)
        return model.model_validate(config)  # its errors are located under config


def unique_plugins(items: list[PluginSection] | None) -> list[PluginSection] | None:
    """A ``plugins`` list names each plugin once (one config per plugin and level)."""
    names = [item.name for item in items or ()]
    twice = next((name for index, name in enumerate(names) if name in names[:index]), None)
    if twice is not None:
        raise invalid("duplicate_plugin", f'plugin "{twice}" is listed more than once')
    return items
