"""Resolving a Kubernetes backend reference (a Gateway API ``backendRef``, an Ingress
``backend.service``) to a ``propylon.dev/v1`` Upstream.

A reference to Service NAME (group ``""``, kind ``Service``, the default) resolves to:

1. the Upstream NAME of the target namespace, when the inputs have one (its endpoints, load
   balancing and health checks are the Upstream's; the reference's port is not used);
2. else the Service NAME given in the inputs and the EndpointSlices labelled
   ``kubernetes.io/service-name: NAME``: the Service port the reference names gives the
   target port (by number or by name), the slices' ready endpoints the addresses. The
   Upstream made from it is ``NAME-PORT`` in the Service's namespace. An ExternalName Service
   becomes one endpoint, its DNS name.

``group: propylon.dev, kind: Upstream`` names an Upstream directly. A reference to another
namespace needs a ReferenceGrant there (from the referring kind and namespace, to Service
and optionally that name); a native Upstream reached that way must also list the namespace in
its ``allowedNamespaces``, as translation checks for every Upstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from propylon.config.k8s_status import Condition
from propylon.config.kubernetes import GATEWAY_GROUP, KubernetesObject

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MAX_WEIGHT = 1000  # an Upstream endpoint's and a backend's largest weight


@dataclass(frozen=True, slots=True)
class Resolved:
    upstream: str | None  # "namespace/name" of the Upstream, None when unresolved
    problem: Condition | None = None  # ResolvedRefs=False with its reason


@dataclass
class BackendResolver:
    """Looks references up in the inputs; ``upstreams`` collects the Upstreams made from
    Services (as resource data, by key), each once, with the namespaces allowed to use it."""

    native_upstreams: frozenset[str]  # keys of the propylon.dev/v1 Upstreams given
    services: Mapping[str, KubernetesObject]
    slices: Mapping[str, list[KubernetesObject]]  # by "namespace/service"
    grants: Sequence[KubernetesObject]
    upstreams: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: Iterable[KubernetesObject], native: Iterable[str]) -> BackendResolver:
        services: dict[str, KubernetesObject] = {}
        slices: dict[str, list[KubernetesObject]] = {}
        grants: list[KubernetesObject] = []
        for obj in objects:
            if obj.kind == "Service":
                services[obj.key] = obj
            elif obj.kind == "EndpointSlice":
                owner = obj.metadata.labels.get(SERVICE_NAME_LABEL)
                if owner:
                    slices.setdefault(f"{obj.namespace}/{owner}", []).append(obj)
            elif obj.kind == "ReferenceGrant":
                grants.append(obj)
        return cls(frozenset(native), services, slices, grants)

    def resolve(self, ref: Any, from_kind: str, from_namespace: str) -> Resolved:
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
            return _unresolved("BackendNotFound", "a backend reference needs a name")
        group, kind = ref.get("group", "") or "", ref.get("kind", "Service") or "Service"
        namespace = ref.get("namespace") or from_namespace
        name = ref["name"]
        if (group, kind) == ("propylon.dev", "Upstream"):
            key = f"{namespace}/{name}"
            return Resolved(key) if key in self.native_upstreams else _unresolved(
                "BackendNotFound", f"Upstream {key} not found")
        if (group, kind) not in (("", "Service"), ("core", "Service")):
            return _unresolved("InvalidKind", f"backend kind {group or 'core'}/{kind} is not "
                               "supported (Service, or propylon.dev Upstream)")
        if namespace != from_namespace and not self.granted(from_kind, from_namespace,
                                                            namespace, name):
            return _unresolved("RefNotPermitted", f"Service {namespace}/{name}: no "
                               f"ReferenceGrant in {namespace} allows {from_kind} from "
                               f"{from_namespace}")
        if f"{namespace}/{name}" in self.native_upstreams:
            return Resolved(f"{namespace}/{name}")
        return self._from_service(namespace, name, ref.get("port"), from_namespace)

    def granted(self, from_kind: str, from_namespace: str, namespace: str, name: str) -> bool:
        from_group = "networking.k8s.io" if from_kind == "Ingress" else GATEWAY_GROUP
        for grant in self.grants:
            if grant.namespace != namespace:
                continue
            spec = grant.spec
            sources = [f for f in spec.get("from") or () if isinstance(f, dict)]
            targets = [t for t in spec.get("to") or () if isinstance(t, dict)]
            if any(f.get("group") == from_group and f.get("kind") == from_kind
                   and f.get("namespace") == from_namespace for f in sources) and any(
                    (t.get("group") or "") in ("", "core") and t.get("kind") == "Service"
                    and t.get("name") in (None, "", name) for t in targets):
                return True
        return False

    def _from_service(self, namespace: str, name: str, port: Any,
                      from_namespace: str) -> Resolved:
        service = self.services.get(f"{namespace}/{name}")
        if service is None:
            return _unresolved("BackendNotFound",
                               f"Service {namespace}/{name} not found (no Upstream of that "
                               "name and no Service in the inputs)")
        spec = service.spec
        service_port = _service_port(spec.get("ports") or (), port)
        if service_port is None:
            wanted = "a port" if port is None else f"port {port}"
            return _unresolved("BackendNotFound",
                               f"Service {namespace}/{name} has no {wanted}")
        number = service_port.get("port")
        if spec.get("type") == "ExternalName" and isinstance(spec.get("externalName"), str):
            endpoints = [{"address": spec["externalName"], "port": number}]
        else:
            endpoints = self._endpoints(namespace, name, service_port)
        if not endpoints:
            return _unresolved("BackendNotFound",
                               f"Service {namespace}/{name}: no ready endpoint in its "
                               "EndpointSlices")
        key = f"{namespace}/{name}-{number}"
        upstream = self.upstreams.setdefault(key, _upstream_data(namespace, f"{name}-{number}",
                                                                 endpoints))
        if from_namespace != namespace:
            allowed = upstream["spec"].setdefault("allowedNamespaces", [])
            if from_namespace not in allowed:
                allowed.append(from_namespace)
        return Resolved(key)

    def _endpoints(self, namespace: str, name: str,
                   service_port: dict[str, Any]) -> list[dict[str, Any]]:
        target = service_port.get("targetPort", service_port.get("port"))
        port_name = service_port.get("name") or ""
        found: dict[tuple[str, int], None] = {}
        for endpoint_slice in self.slices.get(f"{namespace}/{name}", ()):
            body = endpoint_slice.body
            number = _slice_port(body.get("ports") or (), port_name, target)
            if number is None:
                continue
            for endpoint in body.get("endpoints") or ():
                if not isinstance(endpoint, dict) or not _ready(endpoint):
                    continue
                for address in endpoint.get("addresses") or ():
                    found[(str(address), number)] = None
        return [{"address": address, "port": port} for address, port in sorted(found)]


def _unresolved(reason: str, message: str) -> Resolved:
    return Resolved(None, Condition("ResolvedRefs", False, reason, message))


def _service_port(ports: Iterable[Any], wanted: Any) -> dict[str, Any] | None:
    ports = [p for p in ports if isinstance(p, dict) and isinstance(p.get("port"), int)]
    if wanted is None:
        return ports[0] if len(ports) == 1 else None
    for port in ports:
        if port["port"] == wanted or (isinstance(wanted, str) and port.get("name") == wanted):
            return port
    return None


def _slice_port(ports: Iterable[Any], name: str, target: Any) -> int | None:
    for port in ports:
        if not isinstance(port, dict) or not isinstance(port.get("port"), int):
            continue
        if (port.get("name") or "") == name or port["port"] == target:
            return int(port["port"])
    return int(target) if isinstance(target, int) and not name else None


def _ready(endpoint: dict[str, Any]) -> bool:
    conditions = endpoint.get("conditions")
    return not isinstance(conditions, dict) or conditions.get("ready") is not False


def _upstream_data(namespace: str, name: str, endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "propylon.dev/v1", "kind": "Upstream",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"endpoints": endpoints}}


def scaled_weights(weights: Sequence[int]) -> list[int]:
    """Gateway API weights (up to 1,000,000) within an Upstream backend's 0-1000, in
    proportion; a non-zero weight stays non-zero."""
    top = max(weights, default=0)
    if top <= MAX_WEIGHT:
        return list(weights)
    return [0 if w == 0 else max(1, round(w * MAX_WEIGHT / top)) for w in weights]
