"""Kubernetes ``Ingress`` (``networking.k8s.io/v1``) as files of ``propylon.dev/v1``
resources: the same mapping as Ingress input (``config/ingress.py``), with every backend
Service NAME:PORT an Upstream NAME whose endpoint is the Service's cluster DNS name
(``NAME.NAMESPACE.svc.cluster.local``), and a Gateway ``ingress`` on 8080 selecting the
label the Routes carry. Ingresses of another class are imported too (the class is the
reason to import them); their class is a warning."""

from __future__ import annotations

from typing import Any

from propylon.config.imports.common import Reader, importer
from propylon.config.ingress import CLASS_LABEL, INGRESS_CLASS, convert_ingress, is_ours
from propylon.config.k8s_backends import BackendResolver
from propylon.config.k8s_status import Findings
from propylon.config.kubernetes import KubernetesObject, mapping


@importer("ingress")
def import_ingress(reader: Reader) -> None:
    data = reader.data
    if not isinstance(data, dict) or data.get("kind") != "Ingress":
        kind = data.get("kind") if isinstance(data, dict) else None
        reader.warn(("kind",), f"kind {kind} is not imported (Ingress)")
        return
    spec = mapping(data.get("spec"))
    named = dict(data, spec={**spec, "ingressClassName": INGRESS_CLASS})
    ingress = KubernetesObject.model_validate(named)
    if not is_ours(KubernetesObject.model_validate(data)):
        reader.warn(("spec",), "an Ingress of another class: imported as class propylon")
    services = _services(ingress)
    resolver = BackendResolver(frozenset(services), {}, {}, [])
    findings = Findings()
    findings.track(ingress.kind, ingress.key, None)
    out = reader.out
    for route in convert_ingress(ingress, resolver, findings):
        out.add("Route", route["metadata"]["name"], route["spec"], ingress.namespace,
                route["metadata"]["labels"])
    for issue in findings.issues:
        reader.warn(tuple(p for p in (issue.field or "").split(".") if p), issue.message)
    for key, port in sorted(services.items()):
        namespace, name = key.split("/")
        if not any(r["kind"] == "Upstream" and r["metadata"]["name"] == name
                   and r["metadata"]["namespace"] == namespace for r in out.resources):
            out.add("Upstream", name, {"endpoints": [
                {"address": f"{name}.{namespace}.svc.cluster.local", "port": port}]},
                namespace)
    if not any(r["kind"] == "Gateway" for r in out.resources):
        out.add("Gateway", "ingress", {
            "listeners": [{"name": "http", "port": 8080}],
            "routeSelector": {"namespaces": ["*"], "matchLabels": {CLASS_LABEL: INGRESS_CLASS}}})


def _services(ingress: KubernetesObject) -> dict[str, int]:
    found: dict[str, int] = {}
    backends: list[Any] = [mapping(ingress.spec.get("defaultBackend"))]
    for rule in ingress.spec.get("rules") or ():
        for path in mapping(mapping(rule).get("http")).get("paths") or ():
            backends.append(mapping(mapping(path).get("backend")))
    for backend in backends:
        service = mapping(backend.get("service"))
        if service.get("name"):
            port = mapping(service.get("port")).get("number", 80)
            found[f"{ingress.namespace}/{service['name']}"] = int(port) if isinstance(
                port, int) else 80
    return found
