"""Filters built from the IR's policies: the data-plane half of the policy type table
(``propylon/policies/table.py``), run when a proxy compiles a configuration. The table is the
one of this process, plugins included (``propylon/policies/plugins.py``): an IR that names a
plugin not installed here is refused, which a connected proxy reports as its NACK."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from propylon.filters.base import Filter, FilterEnv
from propylon.ir.model import PolicyIR
from propylon.policies.plugins import installed_plugins
from propylon.policies.table import PolicyTable, PolicyType


@functools.cache
def filter_class(kind: PolicyType) -> type[Filter]:
    """The row's filter class, imported on first use. It must be a ``Filter`` that says the
    row's name (``policy_type``) and settings model (``settings_model``)."""
    if kind.filter is None:
        raise ValueError(f'policy "{kind.name}" is not supported yet')
    module, _, name = kind.filter.partition(":")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, Filter)):
        raise TypeError(f"policy type {kind.name}: {kind.filter} is not a Filter class")
    if cls.policy_type != kind.name or cls.settings_model is not kind.settings:
        raise TypeError(f"policy type {kind.name}: {kind.filter} is for policy type "
                        f"{cls.policy_type!r} with settings {cls.settings_model.__name__}")
    return cls


def build_filter(policy: PolicyIR, env: FilterEnv, table: PolicyTable | None = None
                 ) -> Filter:
    """The filter of one IR policy: its spec validated with the type's settings model (a
    ``ValueError`` naming the policy's source and field otherwise; the value is never quoted,
    it may be a secret), then the filter class's ``from_spec`` with the typed object.
    ``table``: this process's policy types (plugins included) unless given."""
    cls, settings, plugin = _settled(policy, table)
    if plugin:
        return _plugin_filter(cls, settings, policy, env)
    return cls.from_spec(settings, policy.source, env)


def filter_maker(policy: PolicyIR, env: FilterEnv, table: PolicyTable | None = None
                 ) -> Callable[[], Filter]:
    """What builds filters of one IR policy (``build_filter``), its spec validated once: each
    call a new filter (a Gateway's policy, applied to thousands of rules, each with a filter
    of its own; ``Filter.maker``)."""
    cls, settings, plugin = _settled(policy, table)
    if plugin:
        return functools.partial(_plugin_filter, cls, settings, policy, env)
    return cls.maker(settings, policy.source, env)


def _settled(policy: PolicyIR, table: PolicyTable | None
             ) -> tuple[type[Filter], BaseModel, bool]:
    """The filter class of ``policy``'s type, its spec validated with the type's settings
    model, and whether the type is a plugin's."""
    if table is None:
        table = installed_plugins().table
    kind = table.get(policy.type)
    if kind is None:  # not a built-in type: a plugin this process does not have
        where = " on this proxy"
        raise ValueError(f"{policy.source}: "
                         f"{installed_plugins().not_installed(policy.type, where)}")
    if not kind.supported:
        raise ValueError(f'policy "{policy.type}" is not supported yet')
    cls = filter_class(kind)
    try:
        settings = kind.settings_from(policy.spec)
    except ValidationError as exc:
        raise ValueError(f"{policy.source}: {_first_error(policy.type, exc)}") from None
    return cls, settings, kind.placement != "in"


def _plugin_filter(cls: type[Filter], settings: BaseModel, policy: PolicyIR, env: FilterEnv
                   ) -> Filter:
    try:  # a plugin's failure is reported as its own, with the policy's source
        return cls.from_spec(settings, policy.source, env)
    except Exception as exc:
        raise ValueError(f"{policy.source}: plugin {policy.type}: {exc}") from exc


def _first_error(prefix: str, exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in (prefix, *error["loc"]))
    more = exc.error_count() - 1
    return f"{where}: {error['msg']}" + (f" (and {more} more)" if more else "")
