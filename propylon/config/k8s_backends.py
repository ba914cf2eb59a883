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

A reference whose fields have the wrong type raises ``FieldError`` (the referring rule reports
it); a Service, EndpointSlice or ReferenceGrant whose fields have the wrong type leaves the
reference unresolved, its ``ResolvedRefs=False`` naming the object and the field.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from propylon.config.k8s_fields import (
    FieldError,
    describe,
    entries,
    int_or_text,
    integer,
    path,
    section,
    text,
    texts,
)
from propylon.config.k8s_status import Condition
from propylon.config.kubernetes import GATEWAY_GROUP, KubernetesObject

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MAX_WEIGHT = 1000  # an Upstream endpoint's and a backend's largest weight


# an Upstream made of a Service used: its key, its data and the referring namespace
Use = tuple[str, dict[str, Any], str]


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
    # while not None, each Upstream a reference resolved to is noted here (``use``'s
    # arguments), for a caller that gives the same references again without resolving them
    uses: list[Use] | None = None
    # while not None, each reference to a Service is noted here with what it gave
    # (``lookups_hold``: whether they give it still, the Services or EndpointSlices changed)
    lookups: list[Lookup] | None = None
    # while not None, each ReferenceGrant question asked is noted here with its answer
    # (``grants_hold``: whether they answer it still, the ReferenceGrants changed)
    grants_read: list[GrantRead] | None = None
    # what each Service port read gave (its endpoints read once per conversion)
    _read: dict[tuple[str, str, int | str | None], tuple[Resolved, dict[str, Any] | None]] = \
        field(default_factory=dict)

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

    def resolve(self, ref: Any, from_kind: str, from_namespace: str, at: str = "") -> Resolved:
        """What ``ref`` (at ``at`` in the referring object) names; a ``FieldError`` when one of
        its fields has the wrong type."""
        if not isinstance(ref, dict):
            raise FieldError(at, f"a backend reference must be a mapping, not {describe(ref)}")
        name = text(ref, "name", at)
        if not name:
            return _unresolved("BackendNotFound", "a backend reference needs a name")
        group = text(ref, "group", at) or ""
        kind = text(ref, "kind", at) or "Service"
        namespace = text(ref, "namespace", at) or from_namespace
        port = int_or_text(ref, "port", at)  # a number, or an Ingress's port name
        if (group, kind) == ("propylon.dev", "Upstream"):
            key = f"{namespace}/{name}"
            return Resolved(key) if key in self.native_upstreams else _unresolved(
                "BackendNotFound", f"Upstream {key} not found")
        if (group, kind) not in (("", "Service"), ("core", "Service")):
            return _unresolved("InvalidKind", f"backend kind {group or 'core'}/{kind} is not "
                               "supported (Service, or propylon.dev Upstream)")
        if namespace != from_namespace:
            try:
                granted = self.granted(from_kind, from_namespace, namespace, name)
            except ObjectFieldError as exc:
                return _unresolved("RefNotPermitted", str(exc))
            if not granted:
                return _unresolved("RefNotPermitted", f"Service {namespace}/{name}: no "
                                   f"ReferenceGrant in {namespace} allows {from_kind} from "
                                   f"{from_namespace}")
        if f"{namespace}/{name}" in self.native_upstreams:
            return Resolved(f"{namespace}/{name}")
        return self._from_service(namespace, name, port, from_namespace)

    def granted(self, from_kind: str, from_namespace: str, namespace: str, name: str,
                to_kind: str = "Service") -> bool:
        """Whether a ReferenceGrant in ``namespace`` lets a ``from_kind`` of
        ``from_namespace`` refer to the core ``to_kind`` ``name`` (a Service, a Secret)."""
        question = (from_kind, from_namespace, namespace, name, to_kind)
        try:
            answer = self._granted(*question)
        except ObjectFieldError as exc:
            if self.grants_read is not None:
                self.grants_read.append(GrantRead(question, str(exc)))
            raise
        if self.grants_read is not None:
            self.grants_read.append(GrantRead(question, answer))
        return answer

    def grants_hold(self, reads: Iterable[GrantRead]) -> bool:
        """Whether each of ``reads`` is answered as it was (the ReferenceGrants may have
        changed since)."""
        for read in reads:
            try:
                answer: bool | str = self._granted(*read.question)
            except ObjectFieldError as exc:
                answer = str(exc)
            if answer != read.answer:
                return False
        return True

    def _granted(self, from_kind: str, from_namespace: str, namespace: str, name: str,
                 to_kind: str) -> bool:
        from_group = "networking.k8s.io" if from_kind == "Ingress" else GATEWAY_GROUP
        for grant in self.grants:
            if grant.namespace != namespace:
                continue
            with _reading(grant):
                spec = grant.spec
                sources = [(text(f, "group", at), text(f, "kind", at), text(f, "namespace", at))
                           for at, f in entries(spec, "from", "spec")]
                targets = [(text(t, "group", at) or "", text(t, "kind", at), text(t, "name", at))
                           for at, t in entries(spec, "to", "spec")]
            if (from_group, from_kind, from_namespace) in sources and any(
                    group in ("", "core") and kind == to_kind and target in (None, "", name)
                    for group, kind, target in targets):
                return True
        return False

    def _from_service(self, namespace: str, name: str, port: int | str | None,
                      from_namespace: str) -> Resolved:
        read = self._read.get((namespace, name, port))
        if read is None:
            read = self._read[(namespace, name, port)] = self._read_service(
                namespace, name, port)
        resolved, data = read
        if self.lookups is not None:
            self.lookups.append(Lookup(namespace, name, port, from_namespace, resolved))
        if data is not None:
            assert resolved.upstream is not None
            self.use(resolved.upstream, data, from_namespace)
        return resolved

    def lookups_hold(self, lookups: Iterable[Lookup]) -> bool:
        """Whether each of ``lookups`` gives what it gave (the Services or their
        EndpointSlices may have changed since: a port gone, no ready endpoint left), each
        Upstream used again as it is now; False at the first that does not (the Upstreams
        used before it stay used: the caller converts the referring object again, which
        uses them as well)."""
        for lookup in lookups:
            if self._from_service(lookup.namespace, lookup.name, lookup.port,
                                  lookup.from_namespace) != lookup.resolved:
                return False
        return True

    def _read_service(self, namespace: str, name: str, port: int | str | None
                      ) -> tuple[Resolved, dict[str, Any] | None]:
        """What a reference to port ``port`` of Service ``namespace/name`` resolves to, and
        the data of the Upstream it makes (None when unresolved)."""
        try:
            return self._service_upstream(namespace, name, port)
        except ObjectFieldError as exc:
            return _unresolved("BackendNotFound", str(exc)), None

    def _service_upstream(self, namespace: str, name: str, port: int | str | None
                          ) -> tuple[Resolved, dict[str, Any] | None]:
        service = self.services.get(f"{namespace}/{name}")
        if service is None:
            return _unresolved("BackendNotFound",
                               f"Service {namespace}/{name} not found (no Upstream of that "
                               "name and no Service in the inputs)"), None
        with _reading(service):
            spec = service.spec
            service_port = _service_port(entries(spec, "ports", "spec"), port)
            external = text(spec, "externalName", "spec")
            external_type = text(spec, "type", "spec") == "ExternalName"
        if service_port is None:
            wanted = "a port" if port is None else f"port {port}"
            return _unresolved("BackendNotFound",
                               f"Service {namespace}/{name} has no {wanted}"), None
        number = service_port.number
        if external_type and external is not None:
            endpoints = [{"address": external, "port": number}]
        else:
            endpoints = self._endpoints(namespace, name, service_port)
        if not endpoints:
            return _unresolved("BackendNotFound",
                               f"Service {namespace}/{name}: no ready endpoint in its "
                               "EndpointSlices"), None
        return (Resolved(f"{namespace}/{name}-{number}"),
                _upstream_data(namespace, f"{name}-{number}", endpoints))

    def use(self, key: str, data: dict[str, Any], from_namespace: str) -> None:
        """The Upstream ``key`` made from a Service (``data``, unless made already) is used
        from ``from_namespace``."""
        if self.uses is not None:
            self.uses.append((key, data, from_namespace))
        upstream = self.upstreams.get(key)
        if upstream is None:
            upstream = self.upstreams[key] = copy.deepcopy(data)
        if from_namespace != upstream["metadata"]["namespace"]:
            allowed = upstream["spec"].setdefault("allowedNamespaces", [])
            if from_namespace not in allowed:
                allowed.append(from_namespace)

    def _endpoints(self, namespace: str, name: str,
                   service_port: _ServicePort) -> list[dict[str, Any]]:
        found: dict[tuple[str, int], None] = {}
        for endpoint_slice in self.slices.get(f"{namespace}/{name}", ()):
            with _reading(endpoint_slice):
                body = endpoint_slice.body
                number = _slice_port(entries(body, "ports", ""), service_port)
                if number is None:
                    continue
                for at, endpoint in entries(body, "endpoints", ""):
                    if _ready(endpoint, at):
                        for address in texts(endpoint, "addresses", at):
                            found[(address, number)] = None
        return [{"address": address, "port": port} for address, port in sorted(found)]


@dataclass(frozen=True, slots=True)
class _ServicePort:
    number: int
    name: str
    target: int | str  # targetPort: a number, or the name of a container port


class ObjectFieldError(Exception):
    """A field of a Service, EndpointSlice or ReferenceGrant read for a reference, with the
    wrong type: the reference is unresolved, and the message names the object."""


@contextmanager
def _reading(obj: KubernetesObject) -> Iterator[None]:
    """A ``FieldError`` in reading ``obj`` as an ``ObjectFieldError`` naming it."""
    try:
        yield
    except FieldError as exc:
        raise ObjectFieldError(f"{obj.kind} {obj.key}: {exc.text}") from exc


@dataclass(frozen=True, slots=True)
class Lookup:
    """A reference to a Service port, from ``from_namespace``, and what it resolved to."""

    namespace: str
    name: str
    port: int | str | None
    from_namespace: str
    resolved: Resolved


@dataclass(frozen=True, slots=True)
class GrantRead:
    """A ReferenceGrant question (``granted``'s arguments) and its answer: whether it is
    granted, or why a grant's fields could not be read."""

    question: tuple[str, str, str, str, str]
    answer: bool | str


def _unresolved(reason: str, message: str) -> Resolved:
    return Resolved(None, Condition("ResolvedRefs", False, reason, message))


def _service_port(ports: list[tuple[str, dict[str, Any]]],
                  wanted: int | str | None) -> _ServicePort | None:
    found = []
    for at, port in ports:
        number = integer(port, "port", at)
        if number is None:
            raise FieldError(path(at, "port"), "required field is missing")
        name = text(port, "name", at) or ""
        target = int_or_text(port, "targetPort", at)
        found.append(_ServicePort(number, name, number if target in (None, "") else target))
    if wanted is None:
        return found[0] if len(found) == 1 else None
    return next((p for p in found
                 if p.number == wanted or (isinstance(wanted, str) and p.name == wanted)), None)


def _slice_port(ports: list[tuple[str, dict[str, Any]]], service_port: _ServicePort) -> int | None:
    """The port of an EndpointSlice that serves ``service_port``: the one of the same name,
    else of the target port's number (a slice without ports: that number)."""
    for at, port in ports:
        number = integer(port, "port", at)
        if number is not None and (
                (text(port, "name", at) or "") == service_port.name
                or number == service_port.target):
            return number
    target = service_port.target
    return target if isinstance(target, int) and not service_port.name else None


def _ready(endpoint: dict[str, Any], at: str) -> bool:
    return section(endpoint, "conditions", at).get("ready") is not False


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
