"""What of a rejected resource can still be served safely (standalone mode's containment).

A resource that fails validation is never served as written; the parts recovered here only
let translation contain it (``translate/containment.py``):

- the metadata is kept when valid; otherwise the resource is known by the rejected key (its
  name and namespace as written, even when they are not valid names) with its labels when
  they are valid, as a Kubernetes object is;
- a Route or RouteTable keeps its metadata, hostnames and the rules whose ``matches`` (written
  out, every item valid) and ``delegate`` parse; each recovered rule is a placeholder
  ``directResponse`` (translation replaces it with the Gateway's ``invalidRouteResponse``) or
  keeps its ``delegate``, so other teams' RouteTables below it keep serving;
- a Gateway keeps its metadata, listeners and ``routeSelector`` (translation disables it:
  its listeners answer 503);
- a Policy keeps its ``targetRefs`` (translation fails its targets closed);
- an HTTPRoute, GRPCRoute or Ingress (``recover_kubernetes``) keeps what it says, under its
  key: conversion reads it as any such object (``config/gatewayapi.py``) and the Routes it
  becomes stand in for it, their rules replaced as a Route's are.

Recovery never widens what a resource matched: a rule without written ``matches`` (the
default is every path) is dropped, and hostnames are recovered as "any host" only when the
spec has no misspelt field that might have been meant as ``hostnames``. ``None``: nothing
can be recovered, the resource is left out.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from propylon.config._types import Hostname, Labels, Name
from propylon.config.kubernetes import KubernetesMetadata, KubernetesObject, is_kubernetes, mapping
from propylon.config.loader import Rejected
from propylon.config.resources import (
    API_VERSION,
    Gateway,
    Metadata,
    Resource,
    Route,
    RouteTable,
    TargetRef,
)
from propylon.config.route import Delegate, Match
from propylon.schema import Selector

_PLACEHOLDER = {"status": 500, "body": "route unavailable"}
_STAND_IN = {"name": "stand-in", "namespace": "stand-in"}  # metadata replaced after validation
_ROUTE_SPEC_FIELDS = frozenset({"hostnames", "rules"})
_MATCH = TypeAdapter(Match)
_HOSTNAMES = TypeAdapter(list[Hostname])
_NAME = TypeAdapter(Name)
_TARGET_REF = TypeAdapter(TargetRef)
_METADATA = TypeAdapter(Metadata)
_DELEGATE = TypeAdapter(Delegate)
_SELECTOR = TypeAdapter(Selector)
_ACTIONS = ("forward", "redirect", "directResponse", "delegate")
_LABELS = TypeAdapter(Labels)
_ROUTE_OBJECTS = frozenset({"HTTPRoute", "GRPCRoute", "Ingress"})  # Kubernetes kinds


def recover(rejected: Rejected) -> Resource | None:
    """The servable part of a rejected Route, RouteTable or Gateway (see the module doc),
    located where the rejected document was; None for other kinds or when nothing is left."""
    data, spec = rejected.data, rejected.data.get("spec")
    if not isinstance(spec, dict):
        return None
    recovered_spec = _SPECS.get(rejected.kind, _nothing)(spec)
    if recovered_spec is None:
        return None
    metadata = _valid(_METADATA, data.get("metadata"))
    document = {"apiVersion": API_VERSION, "kind": rejected.kind,
                "metadata": data["metadata"] if metadata else _STAND_IN, "spec": recovered_spec}
    adapter = _RESOURCES[rejected.kind]
    resource = _valid(adapter, document)
    if resource is None:  # e.g. two recovered rules share a name: recover them unnamed
        for rule in recovered_spec.get("rules", ()):
            rule.pop("name", None)
        resource = _valid(adapter, document)
    if resource is None:
        return None
    if metadata is None:  # known by the rejected key, as a Kubernetes object is
        namespace, name, labels = _identity(rejected)
        resource = resource.model_copy(update={"metadata": Metadata.model_construct(
            name=name, namespace=namespace, labels=labels)})
    resource._source = rejected.source
    return resource


def recover_kubernetes(rejected: Rejected) -> KubernetesObject | None:
    """A rejected HTTPRoute, GRPCRoute or Ingress as conversion can still read it: what it
    says as written (conversion reads every field leniently), its labels when they are
    valid, and the rejected key as its identity even when Kubernetes refuses that name (the
    key is all its status and its replaced rules are known by). None for other objects."""
    data = rejected.data
    if rejected.kind not in _ROUTE_OBJECTS or not is_kubernetes(data):
        return None
    try:
        recovered = KubernetesObject.model_validate({**data, "metadata": _STAND_IN})
    except ValidationError:
        return None
    namespace, name, labels = _identity(rejected)
    metadata = KubernetesMetadata.model_construct(
        name=name, namespace=namespace, labels=labels, annotations={})
    recovered = recovered.model_copy(update={"metadata": metadata})
    recovered._source = rejected.source
    return recovered


def _identity(rejected: Rejected) -> tuple[str, str, dict[str, str]]:
    """The namespace and name of the rejected key (even when they are not valid names: the
    key is all its status and its replaced rules are known by) and its labels when valid."""
    namespace, name = rejected.key.split("/", 1)
    labels = _valid(_LABELS, mapping(rejected.data["metadata"]).get("labels")) or {}
    return namespace, name, labels


def recover_target_refs(rejected: Rejected) -> tuple[TargetRef, ...] | None:
    """A rejected Policy's ``targetRefs``, or None when any of them cannot be read (then
    what the Policy protected is unknown)."""
    spec = rejected.data.get("spec")
    refs = spec.get("targetRefs") if isinstance(spec, dict) else None
    if not isinstance(refs, list) or not refs:
        return None
    recovered = [_valid(_TARGET_REF, ref) for ref in refs]
    if any(ref is None for ref in recovered):
        return None
    return tuple(ref for ref in recovered if ref is not None)


def _route_spec(spec: dict[str, Any]) -> dict[str, Any] | None:
    rules = _table_spec(spec)
    if rules is None:
        return None
    if "hostnames" in spec:
        if _valid(_HOSTNAMES, spec["hostnames"]) is None:
            return None
        return {"hostnames": spec["hostnames"], **rules}
    return rules if set(spec) <= _ROUTE_SPEC_FIELDS else None


def _table_spec(spec: dict[str, Any]) -> dict[str, Any] | None:
    raw_rules = spec.get("rules")
    if not isinstance(raw_rules, list):
        return None
    rules = [rule for raw in raw_rules if (rule := _rule(raw)) is not None]
    return {"rules": rules} if rules else None


def _rule(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("matches"), list):
        return None
    matches = raw["matches"]
    if not matches or any(_valid(_MATCH, match) is None for match in matches):
        return None
    rule: dict[str, Any] = {"matches": matches}
    if _valid(_NAME, raw.get("name")) is not None:
        rule["name"] = raw["name"]
    actions = [action for action in _ACTIONS if action in raw]
    if actions == ["delegate"] and _valid(_DELEGATE, raw["delegate"]) is not None:
        rule["delegate"] = raw["delegate"]
    else:
        rule["directResponse"] = dict(_PLACEHOLDER)
    return rule


def _gateway_spec(spec: dict[str, Any]) -> dict[str, Any] | None:
    listeners = spec.get("listeners")
    if not isinstance(listeners, list):
        return None
    recovered: dict[str, Any] = {"listeners": listeners}
    if _valid(_SELECTOR, spec.get("routeSelector")) is not None:
        recovered["routeSelector"] = spec["routeSelector"]
    return recovered


def _nothing(spec: dict[str, Any]) -> None:
    return None


_SPECS = {"Route": _route_spec, "RouteTable": _table_spec, "Gateway": _gateway_spec}
_RESOURCES: dict[str, TypeAdapter[Any]] = {
    "Route": TypeAdapter(Route), "RouteTable": TypeAdapter(RouteTable),
    "Gateway": TypeAdapter(Gateway),
}


def _valid(adapter: TypeAdapter[Any], value: Any) -> Any:
    if value is None:
        return None
    try:
        return adapter.validate_python(value)
    except (ValidationError, ValueError, TypeError):
        return None
