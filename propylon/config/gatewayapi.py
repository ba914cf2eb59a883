"""Gateway API and Ingress objects as ``propylon.dev/v1`` resources (pure; DESIGN §6).

``expand_kubernetes`` takes every resource of a configuration, the native ones and the
``KubernetesObject``s, and gives the native ones plus what the Kubernetes ones become, so
translation has one path whatever the input. Each converted resource remembers its
``Origin``; ``Findings`` holds the Gateway API conditions found on the way, which
translation completes into the objects' statuses (``translate/gatewayapi_status.py``).

- A ``Gateway`` of ``gatewayClassName: propylon`` becomes the Gateway of the same namespace
  and name. Its HTTP and HTTPS listeners become listeners (listeners sharing a port become
  one, with their hostnames and certificates together; HTTP and HTTPS on one port conflict);
  an HTTPS listener's ``tls.certificateRefs`` are ``kubernetes.io/tls`` Secrets
  (``k8s_secrets.py``), and it is served with those that can be used: with none it is not
  served. ``spec.addresses[]`` of type IPAddress gives the bind address.
  Its ``routeSelector`` selects the label ``propylon.dev/parent.<ns>.<name>`` in every
  namespace: the label conversion puts on the Routes attached to it. Gateways of other
  classes are left alone (another controller's).
- An ``HTTPRoute`` or ``GRPCRoute`` attaches to each parentRef whose Gateway is ours, through
  the listeners the ref names (``sectionName``, ``port``) that allow its namespace and kind
  and whose hostname intersects its hostnames; it becomes one Route of the same namespace
  whose hostnames are those intersections (``gatewayapi_rules.py`` converts the rules), named
  ``kubernetes.route_name``: an HTTPRoute's as it is, a GRPCRoute's ``grpcroute:NAME``.
  It is served on the listeners it attaches to only: when those are not all of a Gateway's,
  the Route names them (``Route.served_on``) and the Gateway carries ``ListenerSections``
  (its listeners' Gateway API listeners), which translation gives the IR
  (``ListenerIR.sections``, ``RuleIR.sections``).
- An ``Ingress`` of class ``propylon`` becomes Routes (``config/ingress.py``:
  ``ingress:NAME``, ``ingress:NAME:2`` ...); no two objects' Routes share a name; the
  certificates of its ``spec.tls`` are added to the HTTPS listeners of the propylon.dev/v1
  Gateways that select those Routes.
- A converted resource keeps the names Kubernetes allows (DNS subdomains such as
  ``api.v1-route``, up to 253 characters) as its own, its listeners' and its rules', even
  where a propylon.dev/v1 name (a DNS label of at most 63) could not be them
  (``converted_resource``): statuses, metrics, access logs and ``propylon explain`` name
  them as written.
- An HTTPRoute, GRPCRoute or Ingress the loader rejected (a name Kubernetes refuses, defined
  twice; ``recovery.recover_kubernetes``), or whose Route does not validate, is contained as
  a native Route is: a Route of its hostnames and matches stands in for it, each rule a
  placeholder that translation replaces with the Gateway's ``invalidRouteResponse``
  (``Expansion.replaced``, ``translate/containment.py``).
- ``ReferenceGrant``, ``Service`` and ``EndpointSlice`` are read by ``k8s_backends.py``;
  ``Namespace`` objects give the labels a listener's ``allowedRoutes`` selector matches
  (``gatewayapi_namespaces.py``).

Fields are read through ``k8s_fields.py``: a field of the wrong type makes its listener, its
rule or, when it belongs to neither, its whole object ``Accepted=False UnsupportedValue``
with a located issue naming the field; conversion never raises on what an object holds.

A conversion keeps what it made of each HTTPRoute, GRPCRoute and Ingress, Gateway and
Service (``_Kept``): the next one, when every other object is the very same (the loader
gives an unchanged file's objects as the same objects), but the Services, EndpointSlices,
ReferenceGrants, Namespaces, Gateways and Secrets (below), as are the native resources'
names, gives an unchanged route object or Ingress the same Routes, with the conditions it
reported replayed (``_FindingsTape``), and an unchanged Gateway or Service the same
resource. When Services or EndpointSlices changed, a kept object's references to Services
are looked up again (``BackendResolver.lookups_hold``): it is kept if they resolve as they
did, the Services' Upstreams made with the Services and endpoints now. When ReferenceGrants
changed, a kept object's ReferenceGrant questions are asked again
(``BackendResolver.grants_hold``), it is kept if they are answered as they were. Of the
Gateways (and the Secrets of their certificates) a route object reads only the listeners
(``_listener_view``): a Gateway or Secret change that leaves them as they were (a
certificate renewed, an address) makes the Gateway again and keeps every route; when they
changed (a listener added, removed or changed), or the Namespaces did while a listener
selects namespaces by label, a kept object is kept if each of its parentRefs attaches as it
did and it is served on the same listener sections (``_attached_again``). So a change of one
HTTPRoute, Ingress, Service or EndpointSlice among 10,000 converts that one (a
ReferenceGrant, a Namespace or a listener, the route objects it answers, admits or attaches
otherwise), and translation, which keeps the rules of the Routes, Gateways and Upstreams
that are the same objects (``translate/memo.py``), translates that one. (An Ingress's
``spec.tls`` certificates are given to the native Gateways that select it at each
conversion: those may change while it does not.) A conversion validates a section it makes
again and again (the same ``forward`` of many rules) once, as a load does
(``schema.shared_sections``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from pydantic import TypeAdapter, ValidationError

from propylon.config.errors import ConfigError, Source
from propylon.config.gateway import Certificate, InlineCertificate, ListenerSections
from propylon.config.gatewayapi_namespaces import NamespaceSelector, namespace_labels
from propylon.config.gatewayapi_rules import RuleConverter
from propylon.config.k8s_backends import BackendResolver, GrantRead, Lookup, Use
from propylon.config.k8s_fields import (
    FieldError,
    choice,
    entries,
    integer,
    items,
    path,
    section,
    text,
    texts,
)
from propylon.config.k8s_secrets import SecretCertificates
from propylon.config.k8s_status import (
    ACCEPTED,
    PARENT_SCOPE,
    PROGRAMMED,
    RESOLVED_REFS,
    Condition,
    Findings,
    Origin,
)
from propylon.config.kubernetes import (
    DNS_LABEL,
    GATEWAY_GROUP,
    MAX_LABEL,
    KubernetesObject,
    former_route_name,
    is_route_name,
    route_name,
)
from propylon.config.loader import Rejected
from propylon.config.outlines import outline_data
from propylon.config.recovery import recover_kubernetes
from propylon.config.resources import API_VERSION, KINDS, Gateway, Resource, Route
from propylon.config.route import Rule
from propylon.schema import OBJECT_NAME, shared_sections

GATEWAY_CLASS = "propylon"
PARENT_LABEL = "propylon.dev/parent.{namespace}.{name}"
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")
# the objects that become Routes; what a conversion keeps by object (``_Kept``): every other
# object is its context, but the Services and EndpointSlices, whose references a kept object
# looks up again, the ReferenceGrants, whose answers it asks again, the Namespaces, of which
# it reads its own's labels, and the Gateways and Secrets, of which route objects read only
# the Gateways' listeners (``_Context``)
ROUTE_OBJECT_KINDS = (*ROUTE_KINDS, "Ingress")
_KEPT_KINDS = ROUTE_OBJECT_KINDS
_BACKEND_KINDS = ("Service", "EndpointSlice")
_READ_BY_QUESTION = ("ReferenceGrant", "Namespace")
_READ_AS_LISTENERS = ("Gateway", "Secret")
_OWN_CONTEXT = (*_KEPT_KINDS, *_BACKEND_KINDS, *_READ_BY_QUESTION, *_READ_AS_LISTENERS)
_FROM = {"Same": "Same", "All": "All", "Selector": "Selector"}  # allowedRoutes.namespaces.from
_PROTOCOLS = ("HTTP", "HTTPS")
_TLS_MODES = {"Terminate": "Terminate"}  # Passthrough belongs to TLS listeners
_RULE = TypeAdapter(Rule)
_FAILED_RULE = {"status": 500, "body": "route unavailable"}


@dataclass
class Expansion:
    resources: list[Resource]  # the native ones, then the converted ones
    origins: dict[str, Origin] = field(default_factory=dict)  # converted ref -> origin
    findings: Findings = field(default_factory=Findings)
    # an invalid object's ref -> the Routes standing in for it (their rules are replaced)
    replaced: dict[str, list[str]] = field(default_factory=dict)
    # with ``validated`` (``expand_kubernetes``): a converted Route this part validates did
    # not validate, so its reports differ from the other part's and the parts cannot tell
    # what the whole would report
    differs: bool = False
    # with ``validated``: each HTTPRoute's and GRPCRoute's (kind, key) -> where its findings
    # are in ``findings.issues`` (start, end), and whether this part converted its rules
    # (else another part does: ``translate/parts.py`` puts that part's findings there)
    runs: dict[tuple[str, str], tuple[int, int, bool]] = field(default_factory=dict)
    # with ``validated``: the Upstreams made of Services each HTTPRoute and GRPCRoute uses
    # (by (kind, key)), converted or outlined (``RuleConverter.outlined_rules``)
    uses: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    @property
    def issues(self) -> list[ConfigError]:
        return self.findings.issues

    def converted_routes(self) -> dict[str, list[str]]:
        """A route object's ref (``GRPCRoute shop/api``) -> the keys of the Routes it became
        (an Ingress's: one per host, then its default backend's), what a Policy's targetRef
        of that kind and name attaches to; and the former name of a GRPCRoute's or an
        Ingress's Route (``Route shop/api``: ``former_route_name``) that no Route has now ->
        that Route, what a Policy written before they were named by kind attaches to."""
        routes: dict[str, list[str]] = {}
        if not self.origins:
            return routes
        taken = {r.key for r in self.resources if r.kind == "Route"}
        for ref, origin in self.origins.items():
            kind, key = ref.split(" ", 1)
            if kind != "Route":
                continue
            routes.setdefault(f"{origin.kind} {origin.key}", []).append(key)
            namespace, _, name = key.partition("/")
            former = former_route_name(name)
            if former is not None and f"{namespace}/{former}" not in taken:
                routes.setdefault(f"Route {namespace}/{former}", []).append(key)
        return routes


@dataclass
class _Listener:
    name: str
    port: int
    hostname: str | None
    namespaces: str  # Same | All | Selector
    kinds: tuple[str, ...]
    selector: NamespaceSelector | None = None  # with Selector, when Namespaces are given
    attached: set[str] = field(default_factory=set)  # "kind ns/name" of the routes
    protocol: str = "HTTP"
    certificates: list[InlineCertificate] = field(default_factory=list)  # HTTPS


@dataclass(frozen=True)
class _ParentRef:
    at: str  # spec.parentRefs[i]
    key: str  # namespace/name of the Gateway
    section: str | None
    port: int | None

    @property
    def scope(self) -> str:
        """The scope of this parentRef's conditions: ``parent Gateway ns/name``, with
        ``sectionName NAME`` and ``port N`` when it gives them."""
        scope = f"{PARENT_SCOPE} {self.key}"
        if self.section is not None:
            scope += f" sectionName {self.section}"
        return scope if self.port is None else f"{scope} port {self.port}"


@dataclass
class _Gateway:
    obj: KubernetesObject
    listeners: list[_Listener]
    data: dict[str, Any] | None  # the propylon Gateway, None when no listener is usable
    # Route ref -> the names of the listeners it is attached to
    bound: dict[str, set[str]] = field(default_factory=dict)


def expand_kubernetes(resources: Sequence[Resource], rejected: Sequence[Rejected] = (),
                      validated: Container[str] | None = None) -> Expansion:
    """The native resources plus what the Kubernetes objects among them become, and what
    stands in for the rejected route objects (the first rejection of each).

    ``validated``: for a part of a configuration (``translate/parts.py``), the keys of the
    converted Routes it validates; every other converted Route is outlined
    (``config/outlines.py``): another part converts its object's rules and validates it.
    Each part converts every other object and attaches every route object, so each records
    the same findings but those of the rules it does not convert (``Expansion.runs``), and
    uses the same Upstreams (``RuleConverter.outlined_rules``; ``Expansion.uses``), unless
    a Route fails validation (``Expansion.differs``). Such a conversion neither replays
    the last one nor is kept for the next."""
    kube = [r for r in resources if isinstance(r, KubernetesObject)]
    native = [r for r in resources if not isinstance(r, KubernetesObject)]
    first = {item.ref: item for item in reversed(rejected)}
    stand_ins = [o for item in first.values() if (o := recover_kubernetes(item)) is not None]
    if not kube and not stand_ins:
        return Expansion(list(resources))
    with shared_sections():
        return _Converter(native, kube + stand_ins, {o.ref for o in stand_ins},
                          validated).run()


class _Converter:
    def __init__(self, native: list[Resource], kube: list[KubernetesObject],
                 stand_ins: set[str], validated: Container[str] | None = None) -> None:
        self.native = native
        self.validated = validated
        # ``outlined_rules``' memo
        self.outline_refs: dict[tuple[str, str, str], tuple[Use, ...]] = {}
        self.kube = sorted(kube, key=lambda o: (o.kind, o.key))
        self.stand_ins = stand_ins  # refs of the objects that stand in for rejected ones
        self.findings = Findings()
        self.expansion = Expansion(list(native), findings=self.findings)
        self.taken = {(r.kind, r.key) for r in native}
        upstreams = [r.key for r in native if r.kind == "Upstream"]
        self.resolver = BackendResolver.of(self.kube, upstreams)
        self.namespaces = namespace_labels(self.kube)
        self.secrets = SecretCertificates.of(self.kube, self.resolver)
        self.last: _Kept | None = None
        self.backends_moved = self.grants_moved = self.namespaces_moved = False
        self.listeners_moved = False

    def _remember(self, gateways: dict[str, _Gateway]) -> None:
        """What a route object's conversion is made from, but itself (``_Context``), with the
        last conversion's if it was made from the same."""
        selectors = any(lst.selector is not None
                        for gateway in gateways.values() for lst in gateway.listeners)
        self.context = _Context(
            tuple(o for o in self.kube if o.kind not in _OWN_CONTEXT),
            frozenset(self.taken), frozenset(self.stand_ins),
            tuple(o for o in self.kube if o.kind in _BACKEND_KINDS), _listener_view(gateways),
            tuple(o for o in self.kube if o.kind == "ReferenceGrant"),
            self.namespaces if selectors else None)
        last = _LAST[0] if self.validated is None else None
        self.last = last if last is not None and last.context.same(self.context) else None
        if self.last is not None:  # what a kept object asks again when these changed
            before = self.last.context
            self.backends_moved = not _same_objects(before.backends, self.context.backends)
            self.grants_moved = not _same_objects(before.grants, self.context.grants)
            self.namespaces_moved = before.namespaces != self.context.namespaces
            self.listeners_moved = before.listeners != self.context.listeners
        self.made = _Kept(self.context)

    def run(self) -> Expansion:
        gateways = {o.key: self._gateway(o) for o in self._of("Gateway") if _ours(o)}
        self._remember(gateways)
        for route in self._of(*ROUTE_KINDS):
            kept = self.last.routes.get(id(route)) if self.last is not None else None
            if kept is None or kept.route is not route or not self._replay(kept, gateways):
                self._route(route, gateways)
        ingress_tls: dict[int, list[InlineCertificate]] = {}  # native Gateway index -> added
        for ingress in self._of("Ingress"):
            kept_ingress = self.last.ingresses.get(id(ingress)) if self.last is not None \
                else None
            if kept_ingress is None or kept_ingress.ingress is not ingress \
                    or not self._replay_ingress(kept_ingress):
                self._ingress(ingress)
            # of the native Gateways, which may change while the Ingress does not
            self._ingress_tls(ingress, ingress_tls)
        for index, certificates in ingress_tls.items():
            resources = self.expansion.resources
            resources[index] = with_certificates(resources[index], certificates)
        for gateway in gateways.values():
            self._finish_gateway(gateway)
        for key, data in sorted(self.resolver.upstreams.items()):
            service = next((o for o in self.kube if o.kind == "Service"
                            and key.startswith(f"{o.key}-")), None)
            if service is not None:
                self._service_upstream(key, data, service)
        _LAST[0] = self.made if self.validated is None else None
        return self.expansion

    # -- Ingresses -----------------------------------------------------------------------
    def _ingress(self, ingress: KubernetesObject) -> None:
        """Convert ``ingress``'s Routes, recording them as ``_route`` does a route object's."""
        from propylon.config.ingress import convert_ingress

        tape = _FindingsTape(self.findings)
        self.findings = tape
        try:
            with self._reading() as read:
                converted = convert_ingress(ingress, self.resolver, self.findings)
                made = [r for data in converted if (r := self._add(data, ingress)) is not None]
        finally:
            self.findings = tape.book
        # every Route made, none standing in for it: what a replay can give again
        if len(made) == len(converted) and ingress.ref not in self.expansion.replaced:
            self.made.ingresses[id(ingress)] = _ConvertedIngress(
                ingress, tuple(made), tuple(tape.calls), read)

    def _replay_ingress(self, kept: _ConvertedIngress) -> bool:
        """What ``_ingress`` made of the same object last time, made again; False (nothing
        done) if the name of one of its Routes is taken now."""
        if any((r.kind, r.key) in self.taken for r in kept.resources):
            return False
        if not self._uses_again(kept.read):
            return False
        for name, args, kwargs in kept.calls:
            getattr(self.findings, name)(*args, **kwargs)
        for resource in kept.resources:
            self._keep(resource, kept.ingress)
        self.made.ingresses[id(kept.ingress)] = kept
        return True

    def _uses_again(self, read: _Read) -> bool:
        """The Upstreams a kept object used, used again: as they were, or with the Services
        and EndpointSlices now when those changed, if its Service references resolve as they
        did and the ReferenceGrants it asked about answer as they did (else False: it is
        converted again)."""
        if self.grants_moved and not self.resolver.grants_hold(read.grants):
            return False
        if self.backends_moved:
            return self.resolver.lookups_hold(read.lookups)
        for use in read.uses:
            self.resolver.use(*use)
        return True

    def _of(self, *kinds: str) -> list[KubernetesObject]:
        return [o for o in self.kube if o.kind in kinds]

    # -- Gateways ------------------------------------------------------------------------
    def _gateway(self, obj: KubernetesObject) -> _Gateway:
        self.findings.track(obj.kind, obj.key, obj.source)
        try:
            address = _address(obj.spec)
            raw_listeners = entries(obj.spec, "listeners", "spec")
        except FieldError as exc:
            self._refuse(obj, exc)
            return _Gateway(obj, [], None)
        listeners: list[_Listener] = []
        protocols: dict[int, str] = {}
        for at, raw in raw_listeners:
            listener = self._listener(obj, raw, at)
            if listener is None:
                continue
            protocol = protocols.setdefault(listener.port, listener.protocol)
            if protocol != listener.protocol:
                self._conflict(obj, listener, protocol, at)
                continue
            listeners.append(listener)
        if not listeners:
            self.findings.set(obj.kind, obj.key, Condition(
                ACCEPTED, False, "ListenersNotValid",
                "no listener can be served (HTTP, or HTTPS with a usable certificate)"),
                field="spec.listeners")
            return _Gateway(obj, listeners, None)
        self.findings.set(obj.kind, obj.key, Condition(ACCEPTED, True, "Accepted"))
        return _Gateway(obj, listeners, _gateway_data(obj, listeners, address))

    def _listener(self, obj: KubernetesObject, raw: dict[str, Any],
                  at: str) -> _Listener | None:
        name = raw.get("name")
        scope = f"listener {name if isinstance(name, str) else at}"
        try:
            return self._read_listener(obj, raw, at, scope)
        except FieldError as exc:
            self.findings.set(obj.kind, obj.key, Condition(
                ACCEPTED, False, "UnsupportedValue", exc.text), scope, exc.field)
            return None

    def _read_listener(self, obj: KubernetesObject, raw: dict[str, Any], at: str,
                       scope: str) -> _Listener | None:
        name = text(raw, "name", at) or ""
        protocol = text(raw, "protocol", at) or ""
        if protocol not in _PROTOCOLS:
            message = f"protocol {protocol!r} is not supported (HTTP and HTTPS)"
            self.findings.set(obj.kind, obj.key, Condition(
                ACCEPTED, False, "UnsupportedProtocol", message), scope, f"{at}.protocol")
            return None
        port = integer(raw, "port", at)
        if port is None:
            raise FieldError(path(at, "port"), "required field is missing")
        hostname = text(raw, "hostname", at)
        where = path(at, "allowedRoutes")
        allowed = section(raw, "allowedRoutes", at)
        allowed_namespaces = section(allowed, "namespaces", where)
        namespaces = choice(allowed_namespaces, "from", path(where, "namespaces"), _FROM, "Same")
        selector = None
        if namespaces == "Selector":
            selector = NamespaceSelector.read(allowed_namespaces, path(where, "namespaces"))
        kinds = tuple(text(k, "kind", a) or "" for a, k in entries(allowed, "kinds", where))
        tls = section(raw, "tls", at)
        if protocol == "HTTPS":
            choice(tls, "mode", path(at, "tls"), _TLS_MODES, "Terminate")
        self.findings.set(obj.kind, obj.key, Condition(ACCEPTED, True, "Accepted"), scope)
        certificates = self._certificates(obj, tls, path(at, "tls"), scope) \
            if protocol == "HTTPS" else []
        if protocol == "HTTPS" and not certificates:
            return None
        if selector is not None and not self.namespaces:
            self.findings.set(obj.kind, obj.key, Condition(
                RESOLVED_REFS, False, "NamespacesNotFound",
                "allowedRoutes.namespaces.from: Selector needs the v1 Namespace objects in "
                "the inputs (e.g. kubectl get namespaces -o yaml), and none is given: no "
                "route attaches"), scope, f"{where}.namespaces.selector")
        return _Listener(name, port, hostname, namespaces, kinds or ROUTE_KINDS, selector,
                         protocol=protocol, certificates=certificates)

    def _certificates(self, obj: KubernetesObject, tls: dict[str, Any], at: str,
                      scope: str) -> list[InlineCertificate]:
        """The usable certificates of an HTTPS listener's ``tls``; each unusable reference is
        the listener's ``ResolvedRefs=False``."""
        refs = entries(tls, "certificateRefs", at)
        if not refs:
            self.findings.set(obj.kind, obj.key, Condition(
                RESOLVED_REFS, False, "InvalidCertificateRef",
                "an HTTPS listener needs tls.certificateRefs (kubernetes.io/tls Secrets); "
                "it is not served"), scope, at)
        found: list[InlineCertificate] = []
        for ref_at, ref in refs:
            certificate = self.secrets.resolve(ref, ref_at, obj.kind, obj.namespace)
            if isinstance(certificate, Condition):
                self.findings.set(obj.kind, obj.key, certificate, scope, ref_at)
            elif certificate not in found:
                found.append(certificate)
        if refs and not found:
            self.findings.set(obj.kind, obj.key, Condition(
                PROGRAMMED, False, "Invalid", "no certificate reference can be used: the "
                "listener is not served"), scope, at)
        return found

    def _conflict(self, obj: KubernetesObject, listener: _Listener, protocol: str,
                  at: str) -> None:
        scope = f"listener {listener.name}"
        self.findings.set(obj.kind, obj.key, Condition(
            "Conflicted", True, "ProtocolConflict",
            f"port {listener.port} is already an {protocol} listener's"), scope,
            f"{at}.protocol", warning=True)
        self.findings.set(obj.kind, obj.key, Condition(
            PROGRAMMED, False, "Invalid", "not served: protocol conflict"), scope)

    def _finish_gateway(self, gateway: _Gateway) -> None:
        obj = gateway.obj
        for listener in gateway.listeners:
            self.findings.note(obj.kind, obj.key,
                               f"listener {listener.name}: attachedRoutes={len(listener.attached)}")
        if gateway.data is None:
            return
        sections = _sections(gateway)
        # what it is made of: its object, its routes' sections, its certificates (its Secrets')
        made_of = (obj, sections, [lst.certificates for lst in gateway.listeners])
        kept = self.last.gateways.get(obj.key) if self.last is not None else None
        if kept is not None and kept[0] is obj and kept[1:3] == made_of[1:] and (
                kept[-1].kind, kept[-1].key) not in self.taken:
            self._keep(kept[-1], obj)
            self.made.gateways[obj.key] = kept
            return
        resource = self._add(gateway.data, obj)
        if isinstance(resource, Gateway):
            _attach_certificates(resource, gateway.listeners)
            resource._sections = sections
            self.made.gateways[obj.key] = (*made_of, resource)

    def _service_upstream(self, key: str, data: dict[str, Any], service: KubernetesObject
                          ) -> None:
        """The Upstream ``key`` the routes' references to ``service`` made: the last
        conversion's when made from the same data."""
        kept = self.last.upstreams.get(key) if self.last is not None else None
        if kept is not None and kept[0] is service and kept[1] == data and (
                kept[2].kind, kept[2].key) not in self.taken:
            self._keep(kept[2], service)
            self.made.upstreams[key] = kept
            return
        resource = self._add(data, service)
        if resource is not None:
            self.made.upstreams[key] = (service, data, resource)

    # -- Ingress TLS ---------------------------------------------------------------------
    def _ingress_tls(self, ingress: KubernetesObject,
                     added: dict[int, list[InlineCertificate]]) -> None:
        """Add the certificates of ``ingress``'s ``spec.tls`` to each native Gateway that
        selects its Routes and has an HTTPS listener."""
        from propylon.config.ingress import ingress_certificates, route_labels

        certificates = ingress_certificates(ingress, self.secrets, self.findings)
        if not certificates:
            return
        labels = route_labels(ingress)
        served = False
        for index, resource in enumerate(self.native):
            if isinstance(resource, Gateway) and _selects(resource, ingress.namespace, labels) \
                    and any(lst.tls is not None for lst in resource.spec.listeners):
                held = added.setdefault(index, [])
                held += [c for c in certificates if c not in held]
                served = True
        if not served:
            self.findings.set(ingress.kind, ingress.key, Condition(
                ACCEPTED, True, "UnsupportedValue",
                "spec.tls: no Gateway that selects its Routes has an HTTPS listener: its "
                "certificates are not served"), field="spec.tls", warning=True)

    # -- Routes --------------------------------------------------------------------------
    def _route(self, route: KubernetesObject, gateways: dict[str, _Gateway]) -> None:
        """Convert ``route``, recording what it reports and resolves, to be replayed by the
        next conversion (``_replay``) if nothing it was made from changes (a part's
        conversion, never replayed, records where its findings are and what it used)."""
        if self.validated is not None:
            start = len(self.findings.issues)
            outlined = self._outlined(route)
            with self._reading() as read:
                self._convert_route(route, gateways, outlined)
            self.expansion.runs[(route.kind, route.key)] = (
                start, len(self.findings.issues), not outlined)
            self.expansion.uses[(route.kind, route.key)] = frozenset(
                use[0] for use in read.uses)
            return
        tape = _FindingsTape(self.findings)
        self.findings = tape
        with self._reading() as read:
            made = self._convert_route(route, gateways)
        self.findings = tape.book
        if made is not None and route.ref not in self.expansion.replaced:
            resource, bound, attached, refs, own = made
            self.made.routes[id(route)] = _ConvertedRoute(
                route, resource, tuple(tape.calls),
                {key: frozenset(names) for key, names in bound.items()}, read, attached,
                refs, own)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[_Read]:
        """What the resolver is asked meanwhile, noted (``_Read``: filled when done)."""
        resolver = self.resolver
        resolver.uses, resolver.lookups, resolver.grants_read = [], [], []
        read = _Read()
        try:
            yield read
        finally:
            read.uses, read.lookups, read.grants = (
                tuple(resolver.uses), tuple(resolver.lookups), tuple(resolver.grants_read))
            resolver.uses = resolver.lookups = resolver.grants_read = None

    def _replay(self, kept: _ConvertedRoute, gateways: dict[str, _Gateway]) -> bool:
        """What ``_route`` made of the same object last time, made again: its Route kept, its
        reports made, its Gateways' listeners attached, the Upstreams of its Services used;
        False (nothing done) if its Route's name is taken now."""
        resource = kept.resource
        if (resource.kind, resource.key) in self.taken or not kept.bound.keys() <= gateways.keys():
            return False
        bound = kept.bound
        if self.listeners_moved or self.namespaces_moved:
            attached = self._attached_again(kept, gateways)
            if attached is None:
                return False
            bound = attached
        if not self._uses_again(kept.read):
            return False
        for name, args, kwargs in kept.calls:
            getattr(self.findings, name)(*args, **kwargs)
        for key, names in bound.items():
            gateway = gateways[key]
            for listener in gateway.listeners:
                if listener.name in names:
                    listener.attached.add(kept.route.ref)
            gateway.bound[resource.ref] = set(names)
        self._keep(resource, kept.route)
        self.made.routes[id(kept.route)] = kept if bound == kept.bound else replace(
            kept, bound=bound)
        return True

    def _attached_again(self, kept: _ConvertedRoute, gateways: dict[str, _Gateway]
                        ) -> dict[str, frozenset[str]] | None:
        """The listeners ``kept``'s route object is attached to now (the Gateways' listeners
        or the Namespaces changed), by Gateway key, when each parentRef attaches as it did
        (the same condition and hostnames) and it is served on the same listener sections
        (``Route.served_on``); else None: it is converted again."""
        route, own = kept.route, kept.own
        outcomes: list[object] = []
        bound: dict[str, set[str]] = {}
        for ref in kept.refs:
            outcome, found = self._attachment(ref, route, own, gateways)
            outcomes.append(outcome)
            if found is not None and found[0].status and gateways[ref.key].data is not None:
                bound.setdefault(ref.key, set()).update(lst.name for lst in found[2])
        if tuple(outcomes) != kept.attached:
            return None
        resource = kept.resource
        if isinstance(resource, Route) and _served_on(bound, gateways) != \
                resource.__pydantic_private__["_served_on"]:  # type: ignore[index]
            return None
        return {key: frozenset(names) for key, names in bound.items()}

    def _attachment(self, ref: _ParentRef, route: KubernetesObject, own: Sequence[str],
                    gateways: dict[str, _Gateway]
                    ) -> tuple[object, tuple[Condition, list[str], list[_Listener]] | None]:
        """How ``route`` attaches through ``ref`` (``_attach``; None: not a Gateway of ours),
        and that outcome as plain data, to compare with a later conversion's (not which
        listeners: a route kept is attached to those of the Gateway now)."""
        gateway = gateways.get(ref.key)
        if gateway is None:
            return (ref.key, None), None
        found = _attach(ref, route, own, gateway, self.namespaces)
        return (ref.key, gateway.data is not None, found[0], tuple(found[1])), found

    def _convert_route(
        self, route: KubernetesObject, gateways: dict[str, _Gateway], outlined: bool = False
    ) -> tuple[Resource, dict[str, set[str]], tuple[object, ...], tuple[_ParentRef, ...],
               tuple[str, ...]] | None:
        try:
            own = texts(route.spec, "hostnames", "spec")
            refs = _parent_refs(route)
            items(route.spec, "rules", "spec")  # read by the converter, checked before attaching
        except FieldError as exc:
            self._refuse(route, exc)
            return None
        labels: dict[str, str] = {}
        hostnames: list[list[str]] = []
        bound: dict[str, set[str]] = {}  # Gateway key -> the listeners attached to
        attached: list[object] = []  # each parentRef's outcome (``_attachment``)
        for ref in refs:
            outcome, found = self._attachment(ref, route, own, gateways)
            attached.append(outcome)
            if found is None:
                continue  # not a Gateway of ours: its controller reports
            gateway = gateways[ref.key]
            self.findings.track(route.kind, route.key, route.source)
            scope = ref.scope  # each parentRef has its own status, as RouteParentStatus
            condition, hosts, listeners = found
            self.findings.set(route.kind, route.key, condition, scope, ref.at)
            if condition.status and gateway.data is not None:
                labels[_parent_label(gateway.obj)] = "attached"
                hostnames.append(hosts)
                bound.setdefault(ref.key, set()).update(lst.name for lst in listeners)
        if not labels:
            return None
        converter = RuleConverter(route, self.resolver, self.findings)
        if outlined:
            rules = converter.outlined_rules(self.outline_refs)
        else:
            rules = converter.rules()
            converter.resolved_refs()
        spec: dict[str, Any] = {"rules": rules}
        if all(hosts for hosts in hostnames):
            spec["hostnames"] = sorted({h for hosts in hostnames for h in hosts})
        data = {"apiVersion": API_VERSION, "kind": "Route",
                "metadata": {"name": route_name(route.kind, route.name),
                             "namespace": route.namespace,
                             "labels": {**route.metadata.labels, **labels}},
                "spec": spec}
        resource = self._add(data, route)
        if resource is None:
            return None
        for key, names in bound.items():
            gateways[key].bound[resource.ref] = names
        if isinstance(resource, Route):
            resource._served_on = _served_on(bound, gateways)
        return resource, bound, tuple(attached), tuple(refs), tuple(own)

    def _outlined(self, route: KubernetesObject) -> bool:
        """Whether another part converts the rules of ``route`` (``validated``)."""
        return self.validated is not None and \
            f"{route.namespace}/{route_name(route.kind, route.name)}" not in self.validated

    def _refuse(self, obj: KubernetesObject, exc: FieldError) -> None:
        """``obj`` is not converted: a field of it that no listener or rule holds is wrong."""
        self.findings.track(obj.kind, obj.key, obj.source)
        self.findings.set(obj.kind, obj.key, Condition(
            ACCEPTED, False, "UnsupportedValue", exc.text), field=exc.field)

    # -- converted resources -------------------------------------------------------------
    def _add(self, data: dict[str, Any], origin: KubernetesObject) -> Resource | None:
        """Validate the converted ``data`` and keep it; contain what fails, at its origin:
        a Route stands in for an invalid origin (``_stand_in``)."""
        kind = data["kind"]
        meta = data["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if (kind, key) in self.taken:
            self.findings.set(origin.kind, origin.key, Condition(
                ACCEPTED, False, "UnsupportedValue",
                f"becomes {kind} {key}, which is already defined"), field="metadata.name")
            return None
        resource = None
        if kind == "Route" and self.validated is not None and key not in self.validated:
            resource = self._outline(data, origin)
        elif kind == "Route" and data["spec"]["rules"] and origin.ref not in self.stand_ins:
            # as a whole first: a Route that validates has no rule to replace (most do; each
            # rule checked alone, then the whole again, was validation twice)
            with contextlib.suppress(ValidationError):
                resource = converted_resource(data)
        if kind == "Route" and resource is None:
            if self.validated is not None:
                self.expansion.differs = True
            rules = [r for i, rule in enumerate(data["spec"]["rules"])
                     if (r := self._checked_rule(rule, origin, i)) is not None]
            if not rules:
                self.findings.set(origin.kind, origin.key, Condition(
                    ACCEPTED, False, "UnsupportedValue", "no rule can be served"))
                return None
            data["spec"]["rules"] = rules
        if resource is None and origin.ref not in self.stand_ins:
            resource = self._validated(data, origin)
        if resource is None and kind == "Route":
            resource = _stand_in(data)
            if resource is not None:
                self.expansion.replaced.setdefault(origin.ref, []).append(resource.ref)
        if resource is None:
            return None
        resource._source = origin.source
        self._keep(resource, origin)
        return resource

    def _outline(self, data: dict[str, Any], origin: KubernetesObject) -> Resource | None:
        """The converted Route ``data`` outlined, as its validation would name and label it;
        None (validated as usual) when it cannot be."""
        meta = data["metadata"]
        if not data["spec"]["rules"] or origin.ref in self.stand_ins or not isinstance(
                meta["name"], str) or not isinstance(meta["namespace"], str):
            return None
        return outline_data(data, "Route", origin.source)

    def _keep(self, resource: Resource, origin: KubernetesObject) -> None:
        self.taken.add((resource.kind, resource.key))
        self.expansion.resources.append(resource)
        self.expansion.origins[resource.ref] = Origin(origin.kind, origin.key)

    def _validated(self, data: dict[str, Any], origin: KubernetesObject) -> Resource | None:
        """``data`` as its kind's resource; None, the reason at ``origin``, when invalid."""
        try:
            return converted_resource(data)
        except ValidationError as exc:
            message = "; ".join(_error_text(e) for e in exc.errors()[:3])
            meta = data["metadata"]
            self.findings.set(origin.kind, origin.key, Condition(
                ACCEPTED, False, "UnsupportedValue",
                f"as {data['kind']} {meta['namespace']}/{meta['name']}: {message}"))
            return None

    def _checked_rule(self, rule: dict[str, Any], origin: KubernetesObject,
                      index: int) -> dict[str, Any] | None:
        """``rule``, or a 500 on its matches when it does not validate (None: neither)."""
        try:
            _RULE.validate_python(_placed_rule(rule))
        except ValidationError as exc:
            message = "; ".join(_error_text(e) for e in exc.errors()[:3])
            self.findings.set(origin.kind, origin.key, Condition(
                "PartiallyInvalid", True, "UnsupportedValue",
                f"rule {index}: {message}; this rule answers 500"),
                field=f"spec.rules[{index}]", warning=True)
            matches = [m for m in rule.get("matches") or [{}] if _valid_match(m)]
            return {"matches": matches, "directResponse": _FAILED_RULE} if matches else None
        return rule


_Call: TypeAlias = tuple[str, tuple[Any, ...], dict[str, Any]]


class _FindingsTape(Findings):
    """Passes every report on to ``book`` and records it, to be replayed on a later one."""

    def __init__(self, book: Findings) -> None:  # no findings of its own
        self.book = book
        self.objects, self.issues = book.objects, book.issues
        self.calls: list[_Call] = []

    def track(self, kind: str, key: str, source: Source | None) -> None:
        self._record("track", (kind, key, source), {})

    def set(self, kind: str, key: str, condition: Condition, scope: str = "",
            field: str | None = None, *, warning: bool = False) -> None:
        self._record("set", (kind, key, condition, scope, field), {"warning": warning})

    def note(self, kind: str, key: str, text: str) -> None:
        self._record("note", (kind, key, text), {})

    def _record(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls.append((name, args, kwargs))
        getattr(self.book, name)(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class _ConvertedRoute:
    route: KubernetesObject
    resource: Resource
    calls: tuple[_Call, ...]  # what it reported
    bound: dict[str, frozenset[str]]  # Gateway key -> the listeners it is attached to
    read: _Read
    attached: tuple[object, ...]  # each parentRef's outcome (``_Converter._attachment``)
    refs: tuple[_ParentRef, ...]  # its parentRefs to Gateways and its own hostnames, as read
    own: tuple[str, ...]  # then (the object is the same while it is kept)


@dataclass(slots=True)
class _Read:
    """What an object's conversion asked the ``BackendResolver``: the Upstreams it used
    (``use``'s arguments), its references to Services and what they gave, its ReferenceGrant
    questions and their answers."""

    uses: tuple[tuple[str, dict[str, Any], str], ...] = ()
    lookups: tuple[Lookup, ...] = ()
    grants: tuple[GrantRead, ...] = ()


@dataclass(frozen=True, slots=True)
class _ConvertedIngress:
    ingress: KubernetesObject
    resources: tuple[Resource, ...]  # its Routes
    calls: tuple[_Call, ...]
    read: _Read


@dataclass(frozen=True, slots=True)
class _Context:
    """What every route object's conversion is made from, but the route objects."""

    objects: tuple[KubernetesObject, ...]  # every other Kubernetes object, in order
    native: frozenset[tuple[str, str]]  # the native resources' (kind, key)
    stand_ins: frozenset[str]
    backends: tuple[KubernetesObject, ...] = ()  # the Services and EndpointSlices, in order
    listeners: tuple[object, ...] = ()  # ``_listener_view`` of the Gateways
    grants: tuple[KubernetesObject, ...] = ()  # the ReferenceGrants, in order
    # each Namespace's labels, when a listener selects namespaces by them (else None)
    namespaces: dict[str, dict[str, str]] | None = None

    def same(self, other: _Context) -> bool:
        """The same: its objects (not the Services, EndpointSlices, ReferenceGrants,
        Namespaces, Gateways and Secrets), the native resources' names and the stand-ins."""
        return (_same_objects(self.objects, other.objects)
                and self.native == other.native and self.stand_ins == other.stand_ins)


def _listener_view(gateways: dict[str, _Gateway]) -> tuple[object, ...]:
    """What a route object's conversion reads of the Gateways (``_attach``): each one's key,
    whether it has a usable listener, and its usable listeners' names, ports, hostnames and
    allowedRoutes (a Secret a listener cannot use leaves it out)."""
    return tuple((key, gateway.data is not None, tuple(
        (lst.name, lst.port, lst.hostname, lst.namespaces, lst.kinds, lst.selector)
        for lst in gateway.listeners)) for key, gateway in gateways.items())


def _same_objects(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


@dataclass(slots=True)
class _Kept:
    """What a conversion made, by route object (its ``id``: the entry holds the object),
    by Gateway key (with the object and the sections it was made with) and by Upstream key
    (with the Service and the data it was made from)."""

    context: _Context
    routes: dict[int, _ConvertedRoute] = field(default_factory=dict)
    ingresses: dict[int, _ConvertedIngress] = field(default_factory=dict)
    # Gateway key -> what it was made of (``_finish_gateway``) and the Gateway made
    gateways: dict[str, tuple[KubernetesObject, ListenerSections | None,
                              list[list[InlineCertificate]], Resource]] = field(
        default_factory=dict)
    upstreams: dict[str, tuple[KubernetesObject, dict[str, Any], Resource]] = field(
        default_factory=dict)


# The last conversion's (one configuration's: each conversion replaces it).
_LAST: list[_Kept | None] = [None]


def converted_resource(data: dict[str, Any]) -> Resource:
    """``data``, a converted resource, as its kind's resource (``ValidationError`` when it is
    invalid), with the names Kubernetes gave it.

    Kubernetes names objects as DNS subdomains (``api.v1-route``, up to 253 characters), and
    a listener or a route rule (a ``SectionName``) the same way; a propylon.dev/v1 name is a
    DNS label of at most 63. A converted resource keeps such names all the same: its own
    (its object's, or one made from it: a GRPCRoute's ``grpcroute:NAME``, an Ingress's
    ``ingress:NAME:2``, a Service's Upstream ``NAME-PORT``), its listeners' and its rules', so
    that the status, the metrics' ``gateway``, ``route`` and ``rule`` labels, the access log
    and ``propylon explain`` name them as the object does. Each is validated under a
    placeholder and given back after: the loader checked the object's name, and nothing
    refers to these names from a propylon.dev/v1 field but a Policy's targetRef, which takes
    them (a Route's backends name Upstreams, whose converted names are labels as Service
    names are). The namespace is still a DNS label, as Kubernetes'."""
    # placeholder -> the Kubernetes name it stands for: the resource's, its sections'
    own: dict[str, str] = {}
    sections: dict[str, str] = {}
    resource = KINDS[data["kind"]].model_validate(_with_placeholders(data, own, sections))
    return _with_names(resource, own, sections) if own or sections else resource


def _kubernetes_only(name: Any) -> bool:
    """Whether ``name`` is a Kubernetes-style name that is no propylon.dev/v1 name: dotted,
    or longer than 63 (an object's name with a suffix may pass 253: still its name)."""
    return isinstance(name, str) and OBJECT_NAME.fullmatch(name) is not None and (
        len(name) > MAX_LABEL or DNS_LABEL.fullmatch(name) is None)


def _placeholder(name: str, kept: dict[str, str], taken: Iterable[Any]) -> str:
    """A propylon.dev/v1 name standing for ``name`` while validating, none of ``taken``."""
    taken = set(taken) | set(kept)
    placeholder = f"k8s-name-{len(kept)}"
    while placeholder in taken:
        placeholder += "-x"
    kept[placeholder] = name
    return placeholder


def _with_placeholders(data: dict[str, Any], own: dict[str, str],
                       kept: dict[str, str]) -> dict[str, Any]:
    """``data`` with a placeholder for each Kubernetes-only name (``converted_resource``):
    its own (kept in ``own``), its listeners' (a Gateway) and its rules' (a Route), each
    none of their real names (kept in ``kept``)."""
    meta, spec = data["metadata"], data.get("spec")
    if _kubernetes_only(meta["name"]) or is_route_name(meta["name"]):
        data = {**data, "metadata": {**meta, "name": _placeholder(meta["name"], own, ())}}
    field_name = _SECTIONS.get(data["kind"])
    if field_name is None or not isinstance(spec, dict) or not isinstance(
            spec.get(field_name), list):
        return data
    sections = spec[field_name]
    names = [s.get("name") for s in sections if isinstance(s, dict)]
    if not any(_kubernetes_only(n) for n in names):
        return data
    sections = [{**s, "name": _placeholder(s["name"], kept, names)}
                if isinstance(s, dict) and _kubernetes_only(s.get("name")) else s
                for s in sections]
    return {**data, "spec": {**spec, field_name: sections}}


_SECTIONS = {"Gateway": "listeners", "Route": "rules"}  # kind -> its named sections


def _with_names(resource: Resource, own: dict[str, str], kept: dict[str, str]) -> Resource:
    """``resource`` validated with placeholders, given back the names they stand for."""
    update: dict[str, Any] = {}
    if resource.name in own:
        update["metadata"] = resource.metadata.model_copy(update={"name": own[resource.name]})
    if isinstance(resource, Gateway | Route):
        spec = resource.spec
        field_name = _SECTIONS[resource.kind]
        sections = getattr(spec, field_name)
        if any(s.name in kept for s in sections):
            named = [s.model_copy(update={"name": kept[s.name]}) if s.name in kept else s
                     for s in sections]
            update["spec"] = spec.model_copy(update={field_name: named})
    return resource.model_copy(update=update)


def _placed_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """``rule`` to validate alone: its name, when Kubernetes-only, a placeholder."""
    if not _kubernetes_only(rule.get("name")):
        return rule
    return {**rule, "name": _placeholder(rule["name"], {}, ())}


def _stand_in(data: dict[str, Any]) -> Route | None:
    """The Route standing in for the converted Route ``data`` of an invalid object: its
    labels, hostnames and matches, each rule a placeholder ``directResponse`` (translation
    replaces it with the Gateway's ``invalidRouteResponse``), known by the object's key even
    when that is no valid Route name. None when even that is invalid (its hostnames)."""
    spec = data["spec"]
    rules = [{"matches": rule["matches"], "directResponse": _FAILED_RULE}
             for rule in spec["rules"]]
    meta = data["metadata"]
    placeholder = {"name": "stand-in", "namespace": "stand-in", "labels": meta.get("labels", {})}
    try:
        route = Route.model_validate({**data, "metadata": placeholder,
                                      "spec": {**spec, "rules": rules}})
    except ValidationError:
        return None
    identity = route.metadata.model_copy(
        update={"name": meta["name"], "namespace": meta["namespace"]})
    return route.model_copy(update={"metadata": identity})


def _ours(obj: KubernetesObject) -> bool:
    return obj.spec.get("gatewayClassName") == GATEWAY_CLASS


def _parent_label(obj: KubernetesObject) -> str:
    return PARENT_LABEL.format(namespace=obj.namespace, name=obj.name)


def _parent_ref(raw: dict[str, Any], at: str, namespace: str) -> _ParentRef | None:
    """A parentRef naming a Gateway (None: a parent of another kind)."""
    name = text(raw, "name", at)
    group = text(raw, "group", at) or GATEWAY_GROUP
    kind = text(raw, "kind", at) or "Gateway"
    ref = _ParentRef(at, f"{text(raw, 'namespace', at) or namespace}/{name}",
                     text(raw, "sectionName", at), integer(raw, "port", at))
    if not name or (group, kind) != (GATEWAY_GROUP, "Gateway"):
        return None
    return ref


def _parent_refs(route: KubernetesObject) -> list[_ParentRef]:
    """The parentRefs of ``route`` (``FieldError`` when one is malformed)."""
    return [ref for at, raw in entries(route.spec, "parentRefs", "spec")
            if (ref := _parent_ref(raw, at, route.namespace)) is not None]


def _served_on(bound: Mapping[str, Iterable[str]], gateways: dict[str, _Gateway]
               ) -> dict[str, tuple[str, ...]] | None:
    """Gateway key -> the listeners a route is attached to, of the Gateways where those are
    not all of them (``Route.served_on``); None when it is attached to all everywhere."""
    served = {key: tuple(sorted(names)) for key, names in bound.items()
              if set(names) != {lst.name for lst in gateways[key].listeners}}
    return served or None


def _attach(ref: _ParentRef, route: KubernetesObject, own: Sequence[str], gateway: _Gateway,
            namespaces: dict[str, dict[str, str]]
            ) -> tuple[Condition, list[str], list[_Listener]]:
    """Whether ``route`` attaches to ``gateway`` through ``ref``, the hostnames it gets
    there (empty: any host) and the listeners it is attached to."""
    if gateway.data is None:
        return Condition(ACCEPTED, False, "NoMatchingParent",
                         f"Gateway {gateway.obj.key} has no usable listener"), [], []
    listeners = [lst for lst in gateway.listeners
                 if ref.section in (None, lst.name) and ref.port in (None, lst.port)]
    if not listeners:
        return Condition(ACCEPTED, False, "NoMatchingParent",
                         "no listener has that sectionName/port"), [], []
    allowed = [lst for lst in listeners
               if _allows(lst, route, gateway.obj.namespace, namespaces)]
    if not allowed:
        return Condition(ACCEPTED, False, "NotAllowedByListeners",
                         "the listeners' allowedRoutes do not admit this route"), [], []
    found: list[str] = []
    any_host = False
    matching = []
    for listener in allowed:
        hosts = intersect_hostnames(listener.hostname, own)
        if hosts is None:
            continue
        matching.append(listener)
        any_host = any_host or not hosts
        found += hosts
    if not matching:
        return Condition(ACCEPTED, False, "NoMatchingListenerHostname",
                         "no listener hostname intersects the route's hostnames"), [], []
    for listener in matching:
        listener.attached.add(route.ref)  # a route attached by several parentRefs counts once
    hosts = [] if any_host else sorted(set(found))
    return Condition(ACCEPTED, True, "Accepted"), hosts, matching


def _allows(listener: _Listener, route: KubernetesObject, gateway_namespace: str,
            namespaces: dict[str, dict[str, str]]) -> bool:
    if route.kind not in listener.kinds:
        return False
    if listener.namespaces == "All":
        return True
    if listener.selector is not None:
        return listener.selector.admits(route.namespace, namespaces)
    return listener.namespaces == "Same" and route.namespace == gateway_namespace


def intersect_hostnames(listener: str | None, route: Iterable[str]) -> list[str] | None:
    """The hostnames a route gets on a listener: ``[]`` any host, None none in common."""
    route = [h.lower() for h in route]
    if listener is None:
        return route
    listener = listener.lower()
    if not route:
        return [listener]
    found = [h for r in route if (h := _common(listener, r)) is not None]
    return sorted(set(found)) or None


def _common(a: str, b: str) -> str | None:
    if a == b:
        return a
    if a.startswith("*.") and b.endswith(a[1:]):
        return b
    if b.startswith("*.") and a.endswith(b[1:]):
        return a
    return None


def _gateway_data(obj: KubernetesObject, listeners: list[_Listener],
                  address: str) -> dict[str, Any]:
    by_port: dict[int, dict[str, Any]] = {}
    for listener in listeners:
        merged = by_port.setdefault(listener.port, {
            "name": listener.name, "port": listener.port, "protocol": listener.protocol,
            "address": address, "hostnames": []})
        if listener.certificates:
            held = merged.setdefault("tls", {"certificates": []})["certificates"]
            held += [entry for c in listener.certificates
                     if (entry := {"certFile": c.source, "keyFile": c.source}) not in held]
        if listener.hostname is None:
            merged["anyHost"] = True
        else:
            merged["hostnames"].append(listener.hostname)
    for merged in by_port.values():
        if merged.pop("anyHost", False):
            merged["hostnames"] = []
    return {"apiVersion": API_VERSION, "kind": "Gateway",
            "metadata": {"name": obj.name, "namespace": obj.namespace,
                         "labels": dict(obj.metadata.labels)},
            "spec": {"listeners": list(by_port.values()),
                     "routeSelector": {"namespaces": ["*"],
                                       "matchLabels": {_parent_label(obj): "attached"}}}}


def _sections(gateway: _Gateway) -> ListenerSections | None:
    """The Gateway API listeners each of ``gateway``'s listeners (the first of each port,
    ``_gateway_data``) stands for, when it serves a route on some of them only (the Route
    says which: ``Route.served_on``); None when each route is served on all of them."""
    every = {lst.name for lst in gateway.listeners}
    if all(names == every for names in gateway.bound.values()):
        return None
    by_port: dict[int, list[_Listener]] = {}
    for listener in gateway.listeners:
        by_port.setdefault(listener.port, []).append(listener)
    listeners = {same[0].name: tuple((lst.name, lst.hostname) for lst in same)
                 for same in by_port.values()}
    return ListenerSections(listeners)


def _attach_certificates(gateway: Gateway, listeners: list[_Listener]) -> None:
    """Give the certificates of the converted ``gateway`` (validated from data naming each
    Secret) their PEM; it is not shared yet."""
    inline = {c.source: c for listener in listeners for c in listener.certificates}
    for listener in gateway.spec.listeners:
        for certificate in listener.tls.certificates if listener.tls is not None else ():
            certificate._inline = inline[certificate.cert_file]


def _selects(gateway: Gateway, namespace: str, labels: dict[str, str]) -> bool:
    """Whether ``gateway``'s routeSelector admits Routes of ``namespace`` with ``labels``."""
    selector = gateway.spec.route_selector
    names = selector.namespaces if selector.namespaces is not None else [gateway.namespace]
    return ("*" in names or namespace in names) and all(
        labels.get(k) == v for k, v in selector.match_labels.items())


# gateway key -> (the Gateway as given, the certificates added, the Gateway with them): the
# same Gateway object while nothing changed, so translation's memo keeps its Routes
_WITH_CERTIFICATES: dict[str, tuple[Resource, tuple[InlineCertificate, ...], Resource]] = {}


def with_certificates(gateway: Resource, certificates: list[InlineCertificate]) -> Resource:
    """``gateway`` with ``certificates`` after its own in each of its HTTPS listeners (chosen
    by SNI among them; its own first is still the default)."""
    assert isinstance(gateway, Gateway)
    key = tuple(certificates)
    held = _WITH_CERTIFICATES.get(gateway.key)
    if held is not None and held[0] is gateway and held[1] == key:
        return held[2]
    extra = [Certificate.of_secret(c) for c in certificates]
    listeners = [
        lst.model_copy(update={"tls": lst.tls.model_copy(update={
            "certificates": [*lst.tls.certificates, *extra]})})
        if lst.tls is not None else lst
        for lst in gateway.spec.listeners
    ]
    copy = gateway.model_copy(update={"spec": gateway.spec.model_copy(
        update={"listeners": listeners})})
    _WITH_CERTIFICATES[gateway.key] = (gateway, key, copy)
    return copy


def _address(spec: dict[str, Any]) -> str:
    """The bind address: the first ``spec.addresses[]`` of type IPAddress, else 0.0.0.0."""
    for at, item in entries(spec, "addresses", "spec"):
        if (text(item, "type", at) or "IPAddress") == "IPAddress":
            value = text(item, "value", at)
            if value is None:
                raise FieldError(path(at, "value"), "required field is missing")
            return value
    return "0.0.0.0"


def _valid_match(match: Any) -> bool:
    from propylon.config.route import Match

    try:
        Match.model_validate(match)
    except (ValidationError, TypeError):
        return False
    return True


def _error_text(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"] if part not in ("<plain>", "<mapping>"))
    return f"{where}: {error['msg']}" if where else str(error["msg"])
