"""Plugins: policy types from other packages, found through entry points (``propylon.filters``).

A plugin is a ``Filter`` subclass named by an entry point of group ``propylon.filters``: the
entry point's name is the policy type's name (the ``name`` of a ``plugins: [{name, config}]``
item, and ``PolicyIR.type`` in the IR), its value the class (``package.module:Class``). The
class says the same name (``policy_type``), the pydantic model its ``config`` is validated
with (``settings_model``) and its place in the order: ``before`` or ``after`` a built-in phase
(``before = "auth"``), after ``headers`` when it says neither. ``sees_consumers = False``
says its filters are not built from the configuration's Consumers: a worker then keeps the
chains holding them when only the Consumers change (by default it builds them again).

``installed_plugins()`` loads every entry point once per process and checks it; its
``table`` is the table of policy types with each usable plugin as a row
(``PolicyTable.extended``): what translation orders a rule's policies by and what a proxy
builds filters from (``policy_types()``). An entry point that cannot be used (its module does
not import, it names no ``Filter`` class, the names differ, it names no phase, two packages
claim one name) is kept with the reason: ``propylon plugins`` shows it, and a configuration
that uses it is refused with that reason.

Nothing of the data plane is imported here: the filter base class is recognised by its
module and name, so the configuration side and the control plane read a plugin's settings
model without loading the built-in filters (the plugin's own module imports
``propylon.filters.base``, which needs only pydantic).

External plugins (``allow_external``): names a control plane accepts without having the
plugin installed. Their config must be a mapping and is passed on as written; their row has
no settings and no filter, and sits after ``headers`` (a proxy orders its filters with its
own table, so the plugin's declared place wins where it runs). See docs/plugins.md.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel

from propylon.policies.table import POLICY_TYPES, Placement, PolicyTable, PolicyType

ENTRY_POINT_GROUP = "propylon.filters"
DEFAULT_PHASE = "headers"  # a plugin that declares no place runs after this phase
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
_RESERVED_NAMES = frozenset({"plugins"})  # the section's own key


class PluginError(LookupError):
    """A plugin name that cannot be used here: not installed, or broken (the message says)."""


@dataclass(frozen=True, slots=True)
class Plugin:
    """One entry point of the group, usable (``row`` set) or not (``error`` set)."""

    name: str  # the entry point's name: the policy type
    target: str  # its value, "module:Class"
    package: str  # the distribution that declares it
    version: str
    cls: type | None = None  # the Filter subclass, once loaded
    row: PolicyType | None = None  # its row of the table
    error: str | None = None  # why it cannot be used

    @property
    def placement(self) -> str:
        """``"after headers"``, ``"before auth"``; empty when unusable."""
        return f"{self.row.placement} {self.row.phase}" if self.row is not None else ""


class PluginSet:
    """The plugins of this process and the table of policy types they extend."""

    __slots__ = ("_by_name", "external", "plugins", "table")

    def __init__(self, plugins: Iterable[Plugin], external: Iterable[str] = ()) -> None:
        self.plugins: tuple[Plugin, ...] = tuple(sorted(plugins, key=lambda p: p.name))
        self._by_name = {p.name: p for p in self.plugins}
        # an installed plugin is checked as installed, whatever the operator declared
        self.external: frozenset[str] = frozenset(external) - self._by_name.keys()
        rows = [p.row for p in self.plugins if p.row is not None]
        rows += [PolicyType(name, DEFAULT_PHASE, placement="after")
                 for name in sorted(self.external)]
        self.table: PolicyTable = POLICY_TYPES.extended(rows)

    def get(self, name: str) -> Plugin | None:
        return self._by_name.get(name)

    @property
    def usable(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.plugins if p.row is not None)

    def settings_model(self, name: str) -> type[BaseModel] | None:
        """The model that validates plugin ``name``'s config; None for an external plugin
        (config passed on unchecked). ``PluginError`` when the name cannot be used here."""
        plugin = self._by_name.get(name)
        if plugin is None:
            if name in self.external:
                return None
            raise PluginError(self.not_installed(name))
        if plugin.row is None:
            raise PluginError(f'plugin "{name}" cannot be used: {plugin.error}')
        return plugin.row.settings

    def not_installed(self, name: str, where: str = "") -> str:
        """Why ``name`` is refused: ``no plugin named "x" is installed (installed: a, b)``."""
        plugin = self._by_name.get(name)
        if plugin is not None and plugin.row is None:
            return f'plugin "{name}" cannot be used: {plugin.error}'
        installed = ", ".join(self.usable) or "none"
        return f'no plugin named "{name}" is installed{where} (installed: {installed})'


def discover(group: str = ENTRY_POINT_GROUP) -> list[Plugin]:
    """Every entry point of ``group``, loaded and checked."""
    found = list(entry_points(group=group))
    claims = Counter(ep.name for ep in found)
    plugins = []
    for ep in found:
        dist = ep.dist
        package, version = (dist.name, dist.version) if dist is not None else ("", "")
        plugin = Plugin(ep.name, ep.value, package, version)
        if claims[ep.name] > 1:
            others = sorted(e.dist.name for e in found if e.name == ep.name and e.dist)
            plugins.append(_broken(plugin, "declared by more than one package: "
                                           + ", ".join(others)))
            continue
        plugins.append(load_plugin(ep, plugin))
    return plugins


def load_plugin(ep: EntryPoint, plugin: Plugin) -> Plugin:
    """``plugin`` with its class and row, or with the reason it cannot be used."""
    try:
        cls = ep.load()
    except Exception as exc:  # any import-time failure of a third-party module
        return _broken(plugin, f"cannot import {ep.value}: {type(exc).__name__}: {exc}")
    try:
        row = plugin_row(ep.name, cls, f"{ep.module}:{ep.attr}")
    except ValueError as exc:
        return _broken(plugin, str(exc), cls)
    return Plugin(plugin.name, plugin.target, plugin.package, plugin.version, cls, row)


def plugin_row(name: str, cls: Any, target: str) -> PolicyType:
    """The table row of plugin class ``cls`` registered as ``name``; ``ValueError`` saying
    what is wrong with it."""
    if not is_filter_class(cls):
        raise ValueError(f"{target} is not a subclass of propylon.filters.Filter")
    if "." in target.partition(":")[2]:
        raise ValueError(f"{target}: the entry point must name a class of its module")
    if not _NAME.fullmatch(name):
        raise ValueError("a plugin name is a letter, then letters, digits, '_', '-' or '.' "
                         "(at most 63)")
    if name in POLICY_TYPES.names or name in _RESERVED_NAMES:
        raise ValueError(f'"{name}" is the name of a built-in policy section')
    if cls.policy_type != name:
        raise ValueError(f"{target} says policy_type {cls.policy_type!r}, not {name!r}")
    model = cls.settings_model
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or model is BaseModel:
        raise ValueError(f"{target} has no settings_model (a pydantic model of its config)")
    placement, phase = placement_of(cls)
    sees = getattr(cls, "sees_consumers", True)
    if not isinstance(sees, bool):
        raise ValueError(f"{target}: sees_consumers is True or False, not {sees!r}")
    return PolicyType(name, phase, model, target, placement=placement, sees_consumers=sees)


def placement_of(cls: Any) -> tuple[Placement, str]:
    """Where a plugin class runs: ``("before", "auth")``; by default ``("after", "headers")``."""
    before, after = getattr(cls, "before", None), getattr(cls, "after", None)
    if before is not None and after is not None:
        raise ValueError("a plugin sets before or after, not both")
    placement: Placement = "before" if before is not None else "after"
    phase = before if before is not None else after if after is not None else DEFAULT_PHASE
    if phase not in POLICY_TYPES.phases:
        raise ValueError(f"{placement} = {phase!r} is not a phase; the phases are "
                         + ", ".join(POLICY_TYPES.phases))
    return placement, phase


def is_filter_class(obj: Any) -> bool:
    """Whether ``obj`` is a subclass of ``propylon.filters.base.Filter`` (recognised by name:
    see the module doc)."""
    return isinstance(obj, type) and any(
        base.__module__ == "propylon.filters.base" and base.__qualname__ == "Filter"
        for base in obj.__mro__[1:])


def _broken(plugin: Plugin, error: str, cls: type | None = None) -> Plugin:
    return Plugin(plugin.name, plugin.target, plugin.package, plugin.version, cls, None, error)


_external: frozenset[str] = frozenset()


@functools.cache
def installed_plugins() -> PluginSet:
    """The plugins installed in this process's environment (loaded on first use)."""
    return PluginSet(discover(), _external)


def policy_types() -> PolicyTable:
    """The table of policy types: the built-in rows and the plugins'."""
    return installed_plugins().table


def allow_external(names: Iterable[str]) -> None:
    """Accept plugin sections named ``names`` without the plugin installed here (a control
    plane's ``--external-plugin``); set before any configuration is loaded."""
    global _external
    _external = frozenset(names)
    installed_plugins.cache_clear()
