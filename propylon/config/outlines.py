"""Routes and RouteTables made from their documents without validating them: for a process
that translates only some Routes (``translate/parts.py``) but must know every one. An outline
holds what every translation step but the resource's own reads of it: its identity, labels,
rule names and source. Another process validates it, or this one once it turns out to need
it (``loader.Outlines``). Conversion outlines the Routes Kubernetes route objects become the
same way, those another part validates (``gatewayapi.expand_kubernetes``'s ``validated``)."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from pydantic import BaseModel

from propylon.config._yaml import Document
from propylon.config.errors import Source
from propylon.config.resources import API_VERSION, Metadata, Route, RouteTable
from propylon.config.route import RouteSpec, RouteTableSpec, Rule

OUTLINED_KINDS = ("Route", "RouteTable")


def outline_key(data: Any) -> tuple[str, str] | None:
    """(kind, key) of the Route or RouteTable ``data`` names plainly (a mapping of this API
    with a string name and namespace), or None."""
    if not isinstance(data, dict) or data.get("apiVersion") != API_VERSION:
        return None
    kind = data.get("kind")
    meta = data.get("metadata")
    if kind not in OUTLINED_KINDS or not isinstance(meta, dict):
        return None
    name, namespace = meta.get("name"), meta.get("namespace", "default")
    if not isinstance(name, str) or not isinstance(namespace, str):
        return None
    return kind, f"{namespace}/{name}"


def outline_of(doc: Document, filename: str, kind: str) -> Route | RouteTable | None:
    """The ``kind`` (``outline_key``'s) ``doc`` names, outlined; None if ``doc`` does not give
    what an outline holds plainly (it is then validated as usual). Labels must be text as
    written: validation would make ``1`` the text ``1``, and a selector would then pick the
    resource it did not pick outlined."""
    return outline_data(doc.data, kind, Source(filename, doc.line, doc.marks, doc.column))


def outline_data(data: dict[str, Any], kind: str,
                 source: Source | None) -> Route | RouteTable | None:
    """``outline_of`` of the data of a Route or RouteTable (a document's, or what conversion
    made of a Kubernetes route object), at ``source``."""
    meta, spec = data["metadata"], data.get("spec")
    labels = meta.get("labels", {})
    rules = spec.get("rules") if isinstance(spec, dict) else None
    if (not isinstance(labels, dict) or not isinstance(rules, list)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
            or not all(isinstance(rule, dict) for rule in rules)):
        return None
    names = [rule.get("name") for rule in rules]
    if not all(name is None or isinstance(name, str) for name in names):
        return None
    metadata = unchecked(Metadata, {"name": meta["name"], "namespace": meta.get(
        "namespace", "default"), "labels": labels})
    outlined_rules = list(map(_outline_rule, names))
    private = {"_source": source}
    if kind == "Route":
        route_spec = unchecked(RouteSpec, {"rules": outlined_rules, "hostnames": []})
        return unchecked(Route, {"api_version": API_VERSION, "kind": kind,
                                 "metadata": metadata, "spec": route_spec}, private)
    table_spec = unchecked(RouteTableSpec, {"rules": outlined_rules})
    return unchecked(RouteTable, {"api_version": API_VERSION, "kind": kind,
                                  "metadata": metadata, "spec": table_spec}, private)


@functools.lru_cache(maxsize=1024)
def _outline_rule(name: str | None) -> Rule:
    """An outlined rule: its name (one object per name: rules are never modified)."""
    return unchecked(Rule, {"name": name, "matches": [], "forward": None, "redirect": None,
                            "direct_response": None, "delegate": None, "policies": []})


_M = TypeVar("_M", bound=BaseModel)


def unchecked(cls: type[_M], fields: dict[str, Any], private: dict[str, Any] | None = None
              ) -> _M:
    """``cls`` with every one of its ``fields`` given, as ``model_construct`` makes it without
    looking for defaults (it took as long as validating)."""
    made = cls.__new__(cls)
    object.__setattr__(made, "__dict__", fields)
    object.__setattr__(made, "__pydantic_fields_set__", set(fields))
    object.__setattr__(made, "__pydantic_extra__", None)
    object.__setattr__(made, "__pydantic_private__", private)
    return made
