"""``networking.k8s.io/v1`` Ingress of class ``propylon`` as ``propylon.dev/v1`` Routes.

The class is ``spec.ingressClassName: propylon`` or the legacy annotation
``kubernetes.io/ingress.class: propylon``; other Ingresses are another controller's. Each
host of ``spec.rules`` becomes one Route (``NAME`` for the first, ``NAME-2`` ... after it; a
rule without host: any host); ``spec.defaultBackend`` becomes the Route ``NAME-default``
(any host, ``prefix: /``, so every more specific rule wins). ``pathType`` Exact -> ``exact``,
Prefix and ImplementationSpecific -> ``prefix`` (segment-wise, as the Ingress spec defines
Prefix). A backend ``service`` (port by number or name) resolves as a Gateway API backendRef
of the Ingress's namespace (``k8s_backends.py``); an unresolved one answers 500.

The Routes carry the label ``propylon.dev/ingress-class: propylon`` (and the Ingress's
labels): a Gateway serves them by selecting it, e.g. ``routeSelector: {namespaces: ["*"],
matchLabels: {propylon.dev/ingress-class: propylon}}``. ``spec.tls`` (certificates in
Secrets) and ``resource`` backends are not supported: they are reported, not dropped silently.
"""

from __future__ import annotations

from typing import Any

from propylon.config.k8s_backends import BackendResolver
from propylon.config.k8s_status import ACCEPTED, RESOLVED_REFS, Condition, Findings
from propylon.config.kubernetes import KubernetesObject, mapping
from propylon.config.resources import API_VERSION

INGRESS_CLASS = "propylon"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
CLASS_LABEL = "propylon.dev/ingress-class"
_PATH_KINDS = {"Exact": "exact", "Prefix": "prefix", "ImplementationSpecific": "prefix"}
_FAILED = {"status": 500, "body": "route unavailable"}


def is_ours(ingress: KubernetesObject) -> bool:
    spec_class = ingress.spec.get("ingressClassName")
    if spec_class is not None:
        return bool(spec_class == INGRESS_CLASS)
    return ingress.metadata.annotations.get(CLASS_ANNOTATION) == INGRESS_CLASS


def convert_ingress(ingress: KubernetesObject, resolver: BackendResolver,
                    findings: Findings) -> list[dict[str, Any]]:
    """The Routes of ``ingress`` as data (none when it is not of class propylon)."""
    if not is_ours(ingress):
        return []
    findings.track(ingress.kind, ingress.key, ingress.source)
    findings.set(ingress.kind, ingress.key, Condition(ACCEPTED, True, "Accepted"))
    convert = _IngressRules(ingress, resolver, findings)
    if ingress.spec.get("tls"):
        findings.set(ingress.kind, ingress.key, Condition(
            ACCEPTED, True, "UnsupportedValue",
            "spec.tls is not supported (certificates from Secrets): served over the "
            "Gateway's listeners as they are"), field="spec.tls", warning=True)
    hosts: dict[str | None, list[dict[str, Any]]] = {}
    for i, rule in enumerate(ingress.spec.get("rules") or ()):
        rule = rule if isinstance(rule, dict) else {}
        host = rule.get("host") if isinstance(rule.get("host"), str) else None
        paths = (rule.get("http") or {}).get("paths") or ()
        hosts.setdefault(host, []).extend(
            convert.path(p, f"spec.rules[{i}].http.paths[{j}]") for j, p in enumerate(paths)
            if isinstance(p, dict))
    routes = []
    for index, (host, rules) in enumerate(hosts.items()):
        if rules:
            name = ingress.name if index == 0 else f"{ingress.name}-{index + 1}"
            routes.append(_route(ingress, name, [host] if host else [], rules))
    default = ingress.spec.get("defaultBackend")
    if isinstance(default, dict):
        rule = {"matches": [{"path": {"prefix": "/"}}],
                **convert.action(default, "spec.defaultBackend")}
        routes.append(_route(ingress, f"{ingress.name}-default", [], [rule]))
    findings.set(ingress.kind, ingress.key, Condition(RESOLVED_REFS, True, "ResolvedRefs"))
    return routes


class _IngressRules:
    def __init__(self, ingress: KubernetesObject, resolver: BackendResolver,
                 findings: Findings) -> None:
        self.ingress, self.resolver, self.findings = ingress, resolver, findings

    def path(self, raw: dict[str, Any], at: str) -> dict[str, Any]:
        kind = _PATH_KINDS.get(raw.get("pathType", "Prefix"), "prefix")
        match = {"path": {kind: raw.get("path") or "/"}}
        return {"matches": [match], **self.action(raw.get("backend") or {}, f"{at}.backend")}

    def action(self, backend: dict[str, Any], at: str) -> dict[str, Any]:
        service = backend.get("service")
        if not isinstance(service, dict):
            self.findings.set(self.ingress.kind, self.ingress.key, Condition(
                RESOLVED_REFS, False, "InvalidKind",
                "only service backends are supported; this path answers 500"), field=at)
            return {"directResponse": _FAILED}
        port = mapping(service.get("port"))
        ref = {"name": service.get("name"), "port": port.get("number", port.get("name"))}
        resolved = self.resolver.resolve(ref, "Ingress", self.ingress.namespace)
        if resolved.problem is not None:
            self.findings.set(self.ingress.kind, self.ingress.key, resolved.problem, field=at)
            return {"directResponse": _FAILED}
        return {"forward": {"backends": [{"upstream": resolved.upstream}]}}


def _route(ingress: KubernetesObject, name: str, hostnames: list[str],
           rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Route",
            "metadata": {"name": name, "namespace": ingress.namespace,
                         "labels": {**ingress.metadata.labels, CLASS_LABEL: INGRESS_CLASS}},
            "spec": {"hostnames": hostnames, "rules": rules}}
