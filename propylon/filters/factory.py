"""Filters built from the IR's policies: the data-plane half of the policy type table
(``propylon/policies/table.py``), run when a proxy compiles a configuration."""

from __future__ import annotations

import functools
import importlib

from pydantic import ValidationError

from propylon.filters.base import Filter, FilterEnv
from propylon.ir.model import PolicyIR
from propylon.policies.table import POLICY_TYPES, PolicyTable, PolicyType


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


def build_filter(policy: PolicyIR, env: FilterEnv, table: PolicyTable = POLICY_TYPES
                 ) -> Filter:
    """The filter of one IR policy: its spec validated with the type's settings model (a
    ``ValueError`` naming the policy's source and field otherwise; the value is never quoted,
    it may be a secret), then the filter class's ``from_spec`` with the typed object."""
    kind = table.get(policy.type)
    if kind is None or not kind.supported:
        raise ValueError(f'policy "{policy.type}" is not supported yet')
    cls = filter_class(kind)
    try:
        settings = kind.settings_from(policy.spec)
    except ValidationError as exc:
        raise ValueError(f"{policy.source}: {_first_error(policy.type, exc)}") from None
    return cls.from_spec(settings, policy.source, env)


def _first_error(prefix: str, exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in (prefix, *error["loc"]))
    more = exc.error_count() - 1
    return f"{where}: {error['msg']}" + (f" (and {more} more)" if more else "")
