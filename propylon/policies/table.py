"""The policy types: one table says what each policy section is, where it runs and what runs it.

One row per type (``PolicyType``): its ``name`` (the section's key in YAML and the IR's
``PolicyIR.type``), its ``phase`` (its place in the order), the pydantic model of its
``settings``, and the ``filter`` class that runs it, named by its import path
(``"module:Class"``, the form of an entry point). A row without settings and filter is a
reserved type: any section of it is refused with ``policy "<name>" is not supported yet``.
Everything else is derived from the rows:

- ``propylon.config`` builds the policy sections of a ``Policy`` resource and of every
  ``policies[]`` item from them (``PolicyType.section_model``: the settings model, or the
  written form when translation changes it, as ``headers`` reads its secrets);
- translation sorts a rule's winning policies by ``POLICY_TYPES.rank`` (``POLICY_ORDER``);
- a proxy builds each filter with ``propylon.filters.build_filter``: the IR's JSON form of the
  section is validated again with the settings model, the filter class is imported from its
  path (and must say the same name and settings model), and gets the typed object.

Filters are named, not imported, so that the configuration side (``propylon.config``, the
control plane) knows every policy type without loading the data plane's filters; this module
imports only the settings models.

Order: phases run in the order of the rows below; a filter earlier in it sees the request
first and the response last; types sharing a phase run in row order. Third-party filters
(issue #12 item 4) will be rows too: a name, a settings model, a ``Filter`` subclass, and a
place ``before`` or ``after`` a built-in phase (``PolicyType.placement``), by default after
``headers``; ``PolicyTable.extended`` adds them. Loading them is not done here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel

from propylon.ir.jsontext import json_sorted
from propylon.policies.auth import ApiKeyPolicy, BasicAuthPolicy, ExtAuthPolicy, JwtPolicy
from propylon.policies.body import CachePolicy, CompressionPolicy, TransformPolicy
from propylon.policies.headers import HeadersPolicy, HeadersSettings
from propylon.policies.traffic import (
    CorsPolicy,
    FaultInjectionPolicy,
    IpFilterPolicy,
    RateLimitPolicy,
    RequestLimitsPolicy,
)
from propylon.policies.waf import WafPolicy
from propylon.schema import IR_CONTEXT

Placement = Literal["before", "in", "after"]
_SLOTS: dict[str, int] = {"before": 0, "in": 1, "after": 2}


@dataclass(frozen=True, slots=True)
class PolicyType:
    """One row of the table: a policy section type and what runs it."""

    name: str  # the section's key in YAML and PolicyIR.type
    phase: str  # the phase it runs in; built-in rows (placement "in") define the phases
    settings: type[BaseModel] | None = None  # what the filter is built from
    filter: str | None = None  # "module:Class" of its Filter subclass; None: not supported yet
    section: type[BaseModel] | None = None  # the written form, when it is not the settings'
    placement: Placement = "in"  # plugins sit before or after a phase's built-in rows
    # its filter reads the snapshot's Consumers (``FilterEnv.snapshot``), so a worker builds
    # it again when they change; a plugin's may, so True unless the row says otherwise
    sees_consumers: bool = True

    def __post_init__(self) -> None:
        if (self.settings is None) != (self.filter is None):
            raise ValueError(f"policy type {self.name}: settings and filter go together")
        if self.filter is not None and not self.filter.partition(":")[2]:
            raise ValueError(f"policy type {self.name}: filter {self.filter!r} is not "
                             "module:Class")

    @property
    def supported(self) -> bool:
        return self.filter is not None

    @property
    def section_model(self) -> type[BaseModel] | None:
        """What a section of this type is validated with where it is written."""
        return self.section or self.settings

    def settings_from(self, spec: Mapping[str, Any]) -> BaseModel:
        """The IR's JSON form of a section (``model_dump(mode="json", by_alias=True)`` of its
        section model, translated) validated again: the object the filter is built from.
        A built-in type's settings are frozen models whose validation reads nothing but the
        spec, so equal specs share one (``_SETTINGS``): a configuration repeats a few
        policies over thousands of rules, each validated again at every compilation."""
        if self.settings is None:
            raise ValueError(f'policy "{self.name}" is not supported yet')
        if self.placement != "in":  # a plugin's model may do anything when validated
            return self.settings.model_validate(spec, context=IR_CONTEXT)
        key = (self.name, json_sorted(spec))
        found = _SETTINGS.get(key)
        if found is None:
            found = self.settings.model_validate(spec, context=IR_CONTEXT)
            if len(_SETTINGS) >= _SETTINGS_MAX:
                _SETTINGS.clear()
            _SETTINGS[key] = found
        return found


# Settings of built-in policy types by (type, spec as canonical JSON); emptied when full.
_SETTINGS: dict[tuple[str, str], BaseModel] = {}
_SETTINGS_MAX = 4096


def _filter(module: str, cls: str) -> str:
    return f"propylon.filters.{module}:{cls}"


# The built-in policy types, in the order they run on a request (DESIGN §6).
_BUILT_IN_ROWS: tuple[PolicyType, ...] = (
    # cheapest rejection first, on the real client IP
    PolicyType("ipFilter", "ipFilter", IpFilterPolicy, _filter("ip_filter", "IpFilter")),
    # sees the request (and its body) before anything acts on it
    PolicyType("waf", "waf", WafPolicy, _filter("waf", "WafFilter")),
    # answers preflights before auth, which browsers do not send credentials for
    PolicyType("cors", "cors", CorsPolicy, _filter("cors", "CorsFilter")),
    # the auth phase: local checks first, the external call last
    PolicyType("jwt", "auth", JwtPolicy, _filter("jwt_auth", "JwtFilter")),
    PolicyType("apiKey", "auth", ApiKeyPolicy, _filter("api_key", "ApiKeyFilter")),
    PolicyType("basicAuth", "auth", BasicAuthPolicy, _filter("basic_auth", "BasicAuthFilter")),
    PolicyType("extAuth", "auth", ExtAuthPolicy, _filter("ext_auth", "ExtAuthFilter")),
    # after auth, so limits can be keyed on the consumer
    PolicyType("rateLimit", "rateLimit", RateLimitPolicy,
               _filter("rate_limit", "RateLimitFilter")),
    PolicyType("requestLimits", "requestLimits", RequestLimitsPolicy,
               _filter("request_limits", "RequestLimitsFilter")),
    # bodies and query rewritten before the header edits
    PolicyType("transform", "transform", TransformPolicy,
               _filter("transform", "TransformFilter")),
    # request/response header edits, closest to the upstream; written with secretRefs
    PolicyType("headers", "headers", HeadersSettings, _filter("headers", "HeadersFilter"),
               section=HeadersPolicy),
    # a cached answer stands in for the upstream's, compressed like it
    PolicyType("cache", "cache", CachePolicy, _filter("cache", "CacheFilter")),
    PolicyType("compression", "compression", CompressionPolicy,
               _filter("compression", "CompressionFilter")),
    # last, so injected faults look like upstream behaviour
    PolicyType("faultInjection", "faultInjection", FaultInjectionPolicy,
               _filter("fault_injection", "FaultInjectionFilter")),
)

# No built-in filter reads the snapshot's Consumers when it is built: apiKey and basicAuth
# look them up on each request in the worker's ``filters._common.ConsumerDirectory``, whose
# table is the served configuration's, so a Consumer change builds none of them again.
BUILT_IN: tuple[PolicyType, ...] = tuple(
    replace(row, sees_consumers=False) for row in _BUILT_IN_ROWS)


class PolicyTable:
    """Policy types by name, in run order; immutable (``extended`` makes a new table)."""

    __slots__ = ("_by_name", "_rank", "phases", "types")

    def __init__(self, types: Iterable[PolicyType]) -> None:
        given = tuple(types)
        self.phases: tuple[str, ...] = tuple(
            dict.fromkeys(t.phase for t in given if t.placement == "in"))
        by_name: dict[str, PolicyType] = {}
        for kind in given:
            if kind.name in by_name:
                raise ValueError(f"policy type {kind.name} is defined twice")
            if kind.phase not in self.phases:
                raise ValueError(f"policy type {kind.name}: no phase {kind.phase!r}")
            by_name[kind.name] = kind
        self.types: tuple[PolicyType, ...] = tuple(sorted(
            given, key=lambda t: (self.phases.index(t.phase), _SLOTS[t.placement])))
        self._by_name = by_name
        self._rank = {t.name: i for i, t in enumerate(self.types)}

    def __iter__(self) -> Iterator[PolicyType]:
        return iter(self.types)

    def __getitem__(self, name: str) -> PolicyType:
        return self._by_name[name]

    def get(self, name: str) -> PolicyType | None:
        return self._by_name.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.types)

    def rank(self, name: str) -> int:
        """The position of type ``name`` in the run order."""
        return self._rank[name]

    def extended(self, types: Iterable[PolicyType]) -> PolicyTable:
        """This table with more rows (plugins); names stay unique."""
        return PolicyTable((*self.types, *types))


POLICY_TYPES = PolicyTable(BUILT_IN)
# The policy type names in run order (what translation sorts a rule's policies by).
POLICY_ORDER: tuple[str, ...] = POLICY_TYPES.names
