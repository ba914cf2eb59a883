"""Kubernetes objects accepted as input besides ``propylon.dev/v1`` (DESIGN §6).

A ``KubernetesObject`` is a resource the loader and the control plane keep as written:
``apiVersion``, ``kind``, ``metadata`` (name, namespace, labels, annotations; the rest of a
``kubectl get -o yaml`` dump is ignored) and every other top-level field (``spec``, an
EndpointSlice's ``endpoints`` and ``ports``) as plain data. Only its identity is checked here;
what it means is worked out by ``config/gatewayapi.py``, which turns the whole set into
``propylon.dev/v1`` resources before translation, and reports problems as Gateway API
conditions instead of refusing the configuration.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from propylon.config._types import Labels, Model, invalid
from propylon.config.resources import Resource
from propylon.schema import check_object_name, is_object_name

GATEWAY_GROUP = "gateway.networking.k8s.io"
# apiVersion -> the kinds of it that are read
KUBERNETES_KINDS: dict[str, frozenset[str]] = {
    f"{GATEWAY_GROUP}/v1": frozenset({"Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant"}),
    f"{GATEWAY_GROUP}/v1beta1": frozenset({"Gateway", "HTTPRoute", "ReferenceGrant"}),
    "networking.k8s.io/v1": frozenset({"Ingress"}),
    "v1": frozenset({"Service", "Namespace", "Secret"}),
    "discovery.k8s.io/v1": frozenset({"EndpointSlice"}),
}
# kinds whose name the control plane's URLs use (lower-case); "gateway" is shared with the
# propylon.dev/v1 Gateway: one Gateway namespace/name is either
# Namespace objects are read from files only (the control plane keeps namespaced objects)
KUBERNETES_KIND_NAMES: tuple[str, ...] = tuple(sorted(
    {kind for kinds in KUBERNETES_KINDS.values() for kind in kinds} - {"Gateway", "Namespace"}))
# Kubernetes names (as the API server checks them): most objects' names are RFC 1123 DNS
# subdomains (dot-separated DNS labels, at most 253: "api.v1-route"); a namespace's, and so a
# Namespace object's, is an RFC 1123 DNS label (no ".", at most 63); a Service's an RFC 1035
# label (a letter first). A converted resource keeps its object's name (gatewayapi.py).
# OBJECT_NAME and is_object_name are propylon.schema's: a Policy's targetRef takes them.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_RFC_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_LABEL = 63
# The Route a route object becomes is named after it (route_name): an HTTPRoute's is its own
# name, a GRPCRoute's and an Ingress's Routes are marked with their kind ("grpcroute:api";
# "ingress:web", "ingress:web:2", ... and "ingress:web:default", one per host, then the
# default backend's). No Kubernetes name and no propylon.dev/v1 name has a ":", so no two
# objects' Routes share a name, whatever the kinds and names of the objects of a namespace.
_ROUTE_MARKS = {"GRPCRoute": "grpcroute:", "Ingress": "ingress:"}


def mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one (objects are read leniently)."""
    return value if isinstance(value, dict) else {}


def is_kubernetes(data: Any) -> bool:
    """Whether ``data`` is a document of an accepted Kubernetes apiVersion."""
    if not isinstance(data, dict):
        return False
    api_version = data.get("apiVersion")
    return isinstance(api_version, str) and api_version in KUBERNETES_KINDS


def route_name(kind: str, name: str, part: str | None = None) -> str:
    """The name of the Route the route object ``kind`` ``name`` becomes (``part``: which of
    an Ingress's Routes, None for its first)."""
    marked = _ROUTE_MARKS.get(kind, "") + name
    return marked if part is None else f"{marked}:{part}"


def route_object_key(data: Any) -> str | None:
    """The key of the Route the HTTPRoute, GRPCRoute or Ingress document ``data`` becomes
    (``route_name``; an Ingress's first), when it names it plainly (a string name and
    namespace); None for any other document. Read before loading, to split a
    configuration's Routes in parts."""
    if not isinstance(data, dict):
        return None
    kind, meta, api_version = data.get("kind"), data.get("metadata"), data.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str) or kind not in \
            _ROUTE_OBJECTS or kind not in KUBERNETES_KINDS.get(api_version, ()) \
            or not isinstance(meta, dict):
        return None
    name, namespace = meta.get("name"), meta.get("namespace", "default")
    if not isinstance(name, str) or not isinstance(namespace, str):
        return None
    return f"{namespace}/{route_name(kind, name)}"


_ROUTE_OBJECTS = frozenset({"HTTPRoute", "GRPCRoute", "Ingress"})


def former_route_name(value: str) -> str | None:
    """The name a Route ``route_name`` made for a GRPCRoute or an Ingress had before such
    Routes were named by kind (2026-12-05): the GRPCRoute's NAME, an Ingress's NAME, NAME-2
    ..., NAME-default; None for a name ``route_name`` does not make so. Policies written then
    target ``{kind: Route, name: <that name>}``."""
    marked = _marked(value)
    if marked is None:
        return None
    name, part = marked
    return f"{name}-{part}" if part else name


def is_route_name(value: str) -> bool:
    """Whether ``value`` is a name ``route_name`` makes for a GRPCRoute or an Ingress."""
    marked = _marked(value)
    if marked is None:
        return False
    name, part = marked
    return is_object_name(name) and (part in ("", "default") or part.isdigit())


def _marked(value: str) -> tuple[str, str] | None:
    """(object name, part: "" for an Ingress's first Route) of a name with a kind's mark."""
    for mark in _ROUTE_MARKS.values():
        if value.startswith(mark):
            name, _, part = value[len(mark):].partition(":")
            return name, part
    return None


def _object_name(value: str) -> str:
    return check_object_name(value, "a Kubernetes object name is")


def _namespace_name(value: str) -> str:
    if len(value) > MAX_LABEL or not DNS_LABEL.fullmatch(value):
        raise invalid("name", f'invalid namespace "{value}": a Kubernetes namespace name is a '
                      f'DNS label: lower-case letters, digits and "-", at most {MAX_LABEL}')
    return value


def _label_name(value: str) -> str:
    if len(value) > MAX_LABEL or not DNS_LABEL.fullmatch(value):
        raise invalid("name", f'invalid name "{value}": a Kubernetes Namespace name is a DNS '
                      f'label: lower-case letters, digits and "-", at most {MAX_LABEL}')
    return value


def _service_name(value: str) -> str:
    if len(value) > MAX_LABEL or not _RFC_1035_LABEL.fullmatch(value):
        raise invalid("name", f'invalid name "{value}": a Kubernetes Service name is an RFC '
                      '1035 label: lower-case letters, digits and "-", a letter first, at '
                      f"most {MAX_LABEL}")
    return value


class KubernetesMetadata(Model):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    name: str
    namespace: str = "default"
    labels: Labels = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    _name = field_validator("name")(_object_name)
    _namespace = field_validator("namespace")(_namespace_name)


class _Named(BaseModel):
    """The name of an object of a kind whose names Kubernetes checks more strictly."""

    model_config = ConfigDict(extra="ignore")
    name: str


class _ServiceNamed(_Named):
    _name = field_validator("name")(_service_name)


class _NamespaceNamed(_Named):
    _name = field_validator("name")(_label_name)


_KIND_NAMES: dict[str, TypeAdapter[Any]] = {
    "Service": TypeAdapter(_ServiceNamed), "Namespace": TypeAdapter(_NamespaceNamed)}


class KubernetesObject(Resource):
    """A Kubernetes object as written; ``body`` is every top-level field but the identity."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    api_version: str = Field(alias="apiVersion")  # type: ignore[assignment]
    kind: str
    metadata: KubernetesMetadata  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _without_status(cls, data: Any) -> Any:
        # a dump's status is the cluster's, not configuration: not kept, not hashed
        if isinstance(data, dict) and "status" in data:
            data = {k: v for k, v in data.items() if k != "status"}
        return data

    @field_validator("metadata", mode="wrap")
    @classmethod
    def _kind_name(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                   info: ValidationInfo) -> Any:
        # a Service's and a Namespace's name as Kubernetes checks it (the error at
        # metadata.name: a ValidationError raised here keeps its location under metadata)
        metadata = handler(value)
        rule = _KIND_NAMES.get(info.data.get("kind", ""))
        if rule is not None:
            rule.validate_python({"name": metadata.name})
        return metadata

    @property
    def body(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})

    @property
    def spec(self) -> dict[str, Any]:
        spec = (self.__pydantic_extra__ or {}).get("spec")  # not ``body``: no copy
        return spec if isinstance(spec, dict) else {}


def is_list(data: dict[str, Any]) -> bool:
    """Whether ``data``, a document of an accepted apiVersion, is a list of objects: a
    ``v1`` ``List`` as ``kubectl get ... -o yaml`` prints any listing, or a list of one kind
    as the API server answers (``HTTPRouteList``)."""
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind.endswith("List"):
        return False
    api_version = data["apiVersion"]
    return (kind == "List" and api_version == "v1") or kind[:-4] in KUBERNETES_KINDS[api_version]


def list_items(data: dict[str, Any]) -> list[Any] | None:
    """The objects of the list ``data`` (``is_list``), each read as if written on its own;
    an item of a list of one kind that does not say its apiVersion and kind (the API server
    leaves them out) is of the list's. None: ``items`` is not a list."""
    items = data.get("items", [])
    if not isinstance(items, list):
        return None
    kind, api_version = data["kind"][:-4], data["apiVersion"]
    if not kind:  # a v1 List: its items say what they are
        return items
    return [{"apiVersion": api_version, "kind": kind, **item}
            if isinstance(item, dict) and "kind" not in item and "apiVersion" not in item
            else item for item in items]


def check_kind(data: dict[str, Any]) -> str | None:
    """The error of a document whose apiVersion is accepted but whose kind is not, or None."""
    kinds = KUBERNETES_KINDS[data["apiVersion"]]
    kind = data.get("kind")
    if isinstance(kind, str) and kind in kinds:
        return None
    expected = ", ".join(sorted(kinds))
    return (f"unknown kind {kind!r} of {data['apiVersion']}; expected one of {expected}"
            if kind else "required field is missing")
