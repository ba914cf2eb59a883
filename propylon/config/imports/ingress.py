"""Kubernetes ``Ingress`` (``networking.k8s.io/v1``) as files of ``propylon.dev/v1``
resources: the same mapping as Ingress input (``config/ingress.py``), with every backend
Service NAME:PORT an Upstream whose endpoint is the Service's cluster DNS name
(``NAME.NAMESPACE.svc.cluster.local``) and that port, named NAME (NAME-PORT when the Service
is used with several ports; a port given by name is assumed to be 80, with a warning), and a
Gateway ``ingress`` on 8080 selecting the label the Routes carry. The Routes are named
``NAME``, ``NAME-2`` ..., ``NAME-default`` (propylon.dev/v1 names, made unique among those
written out), not ``ingress:NAME`` as Ingress input's are. Ingresses of another class are
imported too (the class is the reason to import them); their class is a warning."""

from __future__ import annotations

from typing import Any

from propylon.config.errors import parse_node_path
from propylon.config.imports.common import Reader, importer, valid_name
from propylon.config.imports.shape import ANY
from propylon.config.ingress import CLASS_LABEL, INGRESS_CLASS, convert_ingress, is_ours
from propylon.config.k8s_backends import BackendResolver, Resolved
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
    names = _upstreams(reader, _service_ports(ingress))
    resolver = _Resolver(frozenset(f"{ns}/{service}" for ns, service, _ in names), {}, {}, [])
    resolver.names = names
    findings = Findings()
    findings.track(ingress.kind, ingress.key, None)
    out = reader.out
    for route in convert_ingress(ingress, resolver, findings, _route_name):
        out.add("Route", route["metadata"]["name"], route["spec"], ingress.namespace,
                route["metadata"]["labels"])
    for issue in findings.issues:
        if issue.message.startswith(f"{ACCEPTED}=False"):  # nothing of it is imported
            line, _ = reader.doc.mark_of(parse_node_path(issue.field or ""))
            out.errors.append(f"{reader.file}:{line}: {issue.message}")
        else:
            reader.warn(parse_node_path(issue.field or ""), issue.message)
    if not any(r["kind"] == "Gateway" for r in out.resources):
        out.add("Gateway", "ingress", {
            "listeners": [{"name": "http", "port": 8080}],
            "routeSelector": {"namespaces": ["*"], "matchLabels": {CLASS_LABEL: INGRESS_CLASS}}})


PortKey = int | str | None  # a Service port by number, by name, or not given
UpstreamKey = tuple[str, str, PortKey]  # namespace, Service, port


def _service_ports(ingress: KubernetesObject) -> dict[tuple[str, str], dict[PortKey, str]]:
    """The Services the backends name (namespace, name), each with the ports used (in order,
    with the first backend using each); a ``FieldError`` when a field on the way has the
    wrong type."""
    found: dict[tuple[str, str], dict[PortKey, str]] = {}
    backends = [("spec.defaultBackend", section(ingress.spec, "defaultBackend", "spec"))]
    for at, rule in entries(ingress.spec, "rules", "spec"):
        for where, path in entries(section(rule, "http", at), "paths", f"{at}.http"):
            backends.append((f"{where}.backend", section(path, "backend", where)))
    for at, backend in backends:
        service = section(backend, "service", at)
        name = text(service, "name", f"{at}.service")
        if name:
            port = section(service, "port", f"{at}.service")
            number = integer(port, "number", f"{at}.service.port")
            key: PortKey = number if number is not None else text(
                port, "name", f"{at}.service.port")
            found.setdefault((ingress.namespace, name), {}).setdefault(key, f"{at}.service.port")
    return found


def _upstreams(reader: Reader, services: dict[tuple[str, str], dict[PortKey, str]]
               ) -> dict[UpstreamKey, str]:
    """One Upstream per Service and port, added to the output, by (namespace, Service, port):
    NAME when the Service is used with one port, NAME-PORT when with several (or NAME is
    taken); the Upstream an earlier document made for the same Service and port is used
    again. A port given by name cannot be resolved from an Ingress: 80 is assumed, with a
    warning."""
    out = reader.out
    names: dict[UpstreamKey, str] = {}
    for (namespace, service), ports in services.items():
        for port, at in ports.items():
            number = port if isinstance(port, int) else 80
            if not isinstance(port, int):
                what = f"port {port!r} (a name)" if port else "port (not given)"
                reader.warn(parse_node_path(at), f"Service {service} {what} cannot be "
                            "resolved from an Ingress alone: its Upstream assumes port 80 (give "
                            "the Service and its EndpointSlices as Kubernetes input, or edit "
                            "the Upstream's port)")
            spec = {"endpoints": [{"address": f"{service}.{namespace}.svc.cluster.local",
                                   "port": number}]}
            key = ("ingress-upstream", namespace, service, port)
            if key not in out.memo:
                alone = len(ports) == 1 and not out.has("Upstream", valid_name(service),
                                                       namespace)
                out.memo[key] = out.add("Upstream", service if alone else
                                        f"{service}-{port or 80}", spec, namespace)
            names[(namespace, service, port)] = out.memo[key]
    return names


class _Resolver(BackendResolver):
    """Every Service of the Ingress is an Upstream named for the Service and the port."""

    names: dict[UpstreamKey, str]

    def resolve(self, ref: Any, from_kind: str, from_namespace: str, at: str = "") -> Resolved:
        resolved = super().resolve(ref, from_kind, from_namespace, at)
        if resolved.upstream is None:
            return resolved
        namespace, _, service = resolved.upstream.partition("/")
        name = self.names.get((namespace, service, ref.get("port")))
        return Resolved(f"{namespace}/{name}") if name else resolved


def _route_name(ingress: str, part: str | None) -> str:
    """An imported Route's name: ``NAME``, ``NAME-2`` ..., ``NAME-default`` (propylon.dev/v1
    names; ``Output.add`` makes one that is taken unique)."""
    return ingress if part is None else f"{ingress}-{part}"

