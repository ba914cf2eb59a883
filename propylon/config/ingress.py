"""``networking.k8s.io/v1`` Ingress of class ``propylon`` as ``propylon.dev/v1`` Routes.

The class is ``spec.ingressClassName: propylon`` or the legacy annotation
``kubernetes.io/ingress.class: propylon``; other Ingresses are another controller's. Each
host of ``spec.rules`` becomes one Route (``ingress:NAME`` for the first, ``ingress:NAME:2``
... after it, ``kubernetes.route_name``; a rule without host: any host);
``spec.defaultBackend`` becomes the Route ``ingress:NAME:default``
(any host, ``prefix: /``, so every more specific rule wins). ``pathType`` Exact -> ``exact``,
Prefix and ImplementationSpecific -> ``prefix`` (segment-wise, as the Ingress spec defines
Prefix). A backend ``service`` (port by number or name) resolves as a Gateway API backendRef
of the Ingress's namespace (``k8s_backends.py``); an unresolved one answers 500.

The Routes carry the label ``propylon.dev/ingress-class: propylon`` (and the Ingress's
labels): a Gateway serves them by selecting it, e.g. ``routeSelector: {namespaces: ["*"],
matchLabels: {propylon.dev/ingress-class: propylon}}``. The ``kubernetes.io/tls`` Secrets of
``spec.tls[].secretName`` (the Ingress's namespace) become certificates of the HTTPS listeners
of those Gateways, chosen by SNI among the listener's certificates (``ingress_certificates``
reads them; ``gatewayapi.py`` adds them); a Secret that cannot be used is the Ingress's
``ResolvedRefs=False InvalidCertificateRef`` and its Routes are served all the same.
``resource`` backends are not supported: they are reported, not dropped silently.
A field of the wrong type (``k8s_fields.py``) makes the Ingress ``Accepted=False
UnsupportedValue`` with a located issue naming the field, and none of it is served.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from propylon.config.gateway import InlineCertificate
from propylon.config.k8s_backends import BackendResolver
from propylon.config.k8s_fields import FieldError, choice, entries, integer, section, text, texts
from propylon.config.k8s_secrets import INVALID_REF, SecretCertificates
from propylon.config.k8s_status import ACCEPTED, RESOLVED_REFS, Condition, Findings
from propylon.config.kubernetes import KubernetesObject, route_name
from propylon.config.resources import API_VERSION

INGRESS_CLASS = "propylon"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
CLASS_LABEL = "propylon.dev/ingress-class"
_PATH_KINDS = {"Exact": "exact", "Prefix": "prefix", "ImplementationSpecific": "prefix"}
_FAILED = {"status": 500, "body": "route unavailable"}
# (the Ingress's name, which of its Routes: None for the first host's, "2" ..., "default")
# -> the Route's name
RouteNaming = Callable[[str, str | None], str]


def is_ours(ingress: KubernetesObject) -> bool:
    spec_class = ingress.spec.get("ingressClassName")
    if spec_class is not None:
        return bool(spec_class == INGRESS_CLASS)
    return ingress.metadata.annotations.get(CLASS_ANNOTATION) == INGRESS_CLASS


def converted_route_name(ingress: str, part: str | None) -> str:
    """The name of the Route ``part`` of the Ingress named ``ingress`` (None: its first
    host's) when Kubernetes input is served: ``ingress:NAME``, ``ingress:NAME:2`` ...
    (``kubernetes.route_name``), no other object's."""
    return route_name("Ingress", ingress, part)


def convert_ingress(ingress: KubernetesObject, resolver: BackendResolver, findings: Findings,
                    name: RouteNaming = converted_route_name) -> list[dict[str, Any]]:
    """The Routes of ``ingress`` as data (none when it is not of class propylon, or when a
    field of it has the wrong type), named by ``name`` (``propylon import`` gives the
    propylon.dev/v1 names it writes out)."""
    if not is_ours(ingress):
        return []
    findings.track(ingress.kind, ingress.key, ingress.source)
    findings.set(ingress.kind, ingress.key, Condition(ACCEPTED, True, "Accepted"))
    try:
        routes = _IngressRules(ingress, resolver, findings, name).routes()
    except FieldError as exc:
        findings.set(ingress.kind, ingress.key, Condition(
            ACCEPTED, False, "UnsupportedValue", exc.text), field=exc.field)
        return []
    findings.set(ingress.kind, ingress.key, Condition(RESOLVED_REFS, True, "ResolvedRefs"))
    return routes


def ingress_certificates(ingress: KubernetesObject, secrets: SecretCertificates,
                         findings: Findings) -> list[InlineCertificate]:
    """The certificates of ``ingress``'s ``spec.tls`` (none when it is not of class
    propylon); each one that cannot be used is a ``ResolvedRefs=False`` of the Ingress."""
    if not is_ours(ingress):
        return []
    found: list[InlineCertificate] = []
    try:
        for at, item in entries(ingress.spec, "tls", "spec"):
            texts(item, "hosts", at)
            name = text(item, "secretName", at)
            if not name:
                findings.set(ingress.kind, ingress.key, Condition(
                    RESOLVED_REFS, False, INVALID_REF, "no secretName: a default certificate "
                    "is not supported"), field=at)
                continue
            certificate = secrets.resolve({"name": name}, f"{at}.secretName", ingress.kind,
                                          ingress.namespace)
            if isinstance(certificate, Condition):
                findings.set(ingress.kind, ingress.key, certificate, field=f"{at}.secretName")
            elif certificate not in found:
                found.append(certificate)
    except FieldError as exc:
        findings.set(ingress.kind, ingress.key, Condition(
            RESOLVED_REFS, False, INVALID_REF, exc.text), field=exc.field)
    return found


def route_labels(ingress: KubernetesObject) -> dict[str, str]:
    """The labels of the Routes ``ingress`` becomes."""
    return {**ingress.metadata.labels, CLASS_LABEL: INGRESS_CLASS}


class _IngressRules:
    def __init__(self, ingress: KubernetesObject, resolver: BackendResolver,
                 findings: Findings, name: RouteNaming) -> None:
        self.ingress, self.resolver, self.findings = ingress, resolver, findings
        self.name = name

    def routes(self) -> list[dict[str, Any]]:
        ingress, spec = self.ingress, self.ingress.spec
        hosts: dict[str | None, list[dict[str, Any]]] = {}
        for at, rule in entries(spec, "rules", "spec"):
            paths = entries(section(rule, "http", at), "paths", f"{at}.http")
            hosts.setdefault(text(rule, "host", at) or None, []).extend(
                self.path(p, where) for where, p in paths)
        routes = []
        for index, (host, rules) in enumerate(hosts.items()):
            if rules:
                part = None if index == 0 else str(index + 1)
                routes.append(_route(ingress, self.name(ingress.name, part),
                                     [host] if host else [], rules))
        default = section(spec, "defaultBackend", "spec")
        if default:
            rule = {"matches": [{"path": {"prefix": "/"}}],
                    **self.action(default, "spec.defaultBackend")}
            routes.append(_route(ingress, self.name(ingress.name, "default"), [], [rule]))
        return routes

    def path(self, raw: dict[str, Any], at: str) -> dict[str, Any]:
        kind = choice(raw, "pathType", at, _PATH_KINDS, "Prefix")
        match = {"path": {kind: text(raw, "path", at) or "/"}}
        return {"matches": [match], **self.action(section(raw, "backend", at), f"{at}.backend")}

    def action(self, backend: dict[str, Any], at: str) -> dict[str, Any]:
        if backend.get("service") is None:
            self.findings.set(self.ingress.kind, self.ingress.key, Condition(
                RESOLVED_REFS, False, "InvalidKind",
                "only service backends are supported; this path answers 500"), field=at)
            return {"directResponse": _FAILED}
        where = f"{at}.service"
        service = section(backend, "service", at)
        port = section(service, "port", where)
        number = integer(port, "number", f"{where}.port")
        ref = {"name": text(service, "name", where),
               "port": text(port, "name", f"{where}.port") if number is None else number}
        resolved = self.resolver.resolve(ref, "Ingress", self.ingress.namespace, where)
        if resolved.problem is not None:
            self.findings.set(self.ingress.kind, self.ingress.key, resolved.problem, field=at)
            return {"directResponse": _FAILED}
        return {"forward": {"backends": [{"upstream": resolved.upstream}]}}


def _route(ingress: KubernetesObject, name: str, hostnames: list[str],
           rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Route",
            "metadata": {"name": name, "namespace": ingress.namespace,
                         "labels": route_labels(ingress)},
            "spec": {"hostnames": hostnames, "rules": rules}}
