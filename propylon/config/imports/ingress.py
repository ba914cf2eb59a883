"""Kubernetes ``Ingress`` (``networking.k8s.io/v1``) as files of ``propylon.dev/v1``
resources: the same mapping as Ingress input (``config/ingress.py``), with every backend
Service NAME:PORT an Upstream NAME whose endpoint is the Service's cluster DNS name
(``NAME.NAMESPACE.svc.cluster.local``), and a Gateway ``ingress`` on 8080 selecting the
label the Routes carry. Ingresses of another class are imported too (the class is the
reason to import them); their class is a warning."""

from __future__ import annotations

from propylon.config.errors import parse_node_path
from propylon.config.imports.common import Reader, importer
from propylon.config.imports.shape import ANY
from propylon.config.ingress import CLASS_LABEL, INGRESS_CLASS, convert_ingress, is_ours
from propylon.config.k8s_backends import BackendResolver
from propylon.config.k8s_fields import entries, integer, section, text
from propylon.config.k8s_status import ACCEPTED, Findings
from propylon.config.kubernetes import KubernetesObject


@importer("ingress", ANY)
def import_ingress(reader: Reader) -> None:
    data = reader.data
    if not isinstance(data, dict) or data.get("kind") != "Ingress":
        kind = data.get("kind") if isinstance(data, dict) else None
        reader.warn(("kind",), f"kind {kind} is not imported (Ingress)")
        return
    spec = section(data, "spec", "")
    named = dict(data, spec={**spec, "ingressClassName": INGRESS_CLASS})
    ingress = KubernetesObject.model_validate(named)
    if not is_ours(KubernetesObject.model_validate(data)):
        reader.warn(("spec",), "an Ingress of another class: imported as class propylon")
    if spec.get("tls"):  # no file paths to write for a Secret's certificate
        reader.warn(("spec", "tls"), "spec.tls is not supported by import: give the Ingress and "
                    "its kubernetes.io/tls Secret as input, or certificate files to an HTTPS "
                    "listener of the Gateway")
    services = _services(ingress)
    resolver = BackendResolver(frozenset(services), {}, {}, [])
    findings = Findings()
    findings.track(ingress.kind, ingress.key, None)
    out = reader.out
    for route in convert_ingress(ingress, resolver, findings):
        out.add("Route", route["metadata"]["name"], route["spec"], ingress.namespace,
                route["metadata"]["labels"])
    for issue in findings.issues:
        if issue.message.startswith(f"{ACCEPTED}=False"):  # nothing of it is imported
            line, _ = reader.doc.mark_of(parse_node_path(issue.field or ""))
            out.errors.append(f"{reader.file}:{line}: {issue.message}")
        else:
            reader.warn(parse_node_path(issue.field or ""), issue.message)
    for key, port in sorted(services.items()):
        namespace, _, name = key.partition("/")
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
    """The Services the backends name, each with its port (80 when named, not numbered);
    a ``FieldError`` when a field on the way has the wrong type."""
    found: dict[str, int] = {}
    backends = [("spec.defaultBackend", section(ingress.spec, "defaultBackend", "spec"))]
    for at, rule in entries(ingress.spec, "rules", "spec"):
        for where, path in entries(section(rule, "http", at), "paths", f"{at}.http"):
            backends.append((f"{where}.backend", section(path, "backend", where)))
    for at, backend in backends:
        service = section(backend, "service", at)
        name = text(service, "name", f"{at}.service")
        if name:
            port = integer(section(service, "port", f"{at}.service"), "number",
                           f"{at}.service.port")
            found[f"{ingress.namespace}/{name}"] = 80 if port is None else port
    return found
