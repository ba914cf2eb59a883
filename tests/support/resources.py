"""Builders for the YAML resources of DESIGN §2, so tests state only what matters to them."""

from __future__ import annotations

from typing import Any

import yaml

API = "propylon.dev/v1"
Doc = dict[str, Any]



def shop_gateway_yaml(policies: str = "") -> str:
    """The Gateway shop/edge (port 8080, Routes of namespace shop) as YAML, with the
    Gateway-level ``policies`` list given (``[{apiKey: {}}]``), if any."""
    own = f"  policies: {policies}\n" if policies else ""
    return f"""apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: edge, namespace: shop}}
spec:
  listeners: [{{name: web, port: 8080}}]
  routeSelector: {{namespaces: [shop]}}
{own}"""


# The Gateway shop/edge and the Upstream shop/app (127.0.0.1:9000) as YAML: the start of
# the unit tests' small configurations.
SHOP_EDGE_YAML = shop_gateway_yaml() + """---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: app, namespace: shop}
spec: {endpoints: [{address: 127.0.0.1, port: 9000}]}
"""


def _resource(kind: str, name: str, namespace: str, spec: Doc, labels: dict | None) -> Doc:
    metadata: Doc = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": API, "kind": kind, "metadata": metadata, "spec": spec}


def gateway(port: int, name: str = "gw", namespace: str = "default", **spec: Any) -> Doc:
    """A Gateway with one HTTP listener on 127.0.0.1:``port``; ``spec`` adds fields
    (``policies``, ``trustedProxies``, ``invalidRouteResponse``, ``routeSelector`` ...)."""
    listener = {"name": "web", "port": port, "protocol": "HTTP", "address": "127.0.0.1"}
    return _resource("Gateway", name, namespace, {"listeners": [listener], **spec}, None)


def route(
    name: str,
    rules: list[Doc],
    hostnames: list[str] | None = None,
    namespace: str = "default",
    labels: dict | None = None,
) -> Doc:
    spec: Doc = {"rules": rules}
    if hostnames:
        spec["hostnames"] = hostnames
    return _resource("Route", name, namespace, spec, labels)


def route_table(name: str, rules: list[Doc], namespace: str = "default",
                labels: dict | None = None) -> Doc:
    return _resource("RouteTable", name, namespace, {"rules": rules}, labels)


def upstream(
    name: str,
    *ports: int | tuple[int, int],
    namespace: str = "default",
    **spec: Any,
) -> Doc:
    """Endpoints on 127.0.0.1 at ``ports``; a ``(port, weight)`` pair sets a weight."""
    endpoints = []
    for item in ports:
        port, weight = item if isinstance(item, tuple) else (item, None)
        endpoint: Doc = {"address": "127.0.0.1", "port": port}
        if weight is not None:
            endpoint["weight"] = weight
        endpoints.append(endpoint)
    return _resource("Upstream", name, namespace, {"endpoints": endpoints, **spec}, None)


def policy(name: str, target_refs: list[Doc], namespace: str = "default", **spec: Any) -> Doc:
    return _resource("Policy", name, namespace, {"targetRefs": target_refs, **spec}, None)


def consumer(name: str, credentials: Doc, namespace: str = "default",
             labels: dict | None = None) -> Doc:
    """A Consumer with ``credentials`` (``apiKeys``, ``basicAuth``, ``jwt`` ...)."""
    return _resource("Consumer", name, namespace, {"credentials": credentials}, labels)


def rule(
    path: Doc | None = None,
    *,
    name: str | None = None,
    method: str | None = None,
    headers: list[Doc] | None = None,
    query: list[Doc] | None = None,
    policies: list[Doc] | None = None,
    **action: Any,
) -> Doc:
    """One rule with a single match; ``action`` is ``forward=...``, ``redirect=...``,
    ``directResponse=...`` or ``delegate=...``."""
    match: Doc = {"path": path or {"prefix": "/"}}
    if method:
        match["method"] = method
    if headers:
        match["headers"] = headers
    if query:
        match["query"] = query
    out: Doc = {"matches": [match], **action}
    if name:
        out = {"name": name, **out}
    if policies:
        out["policies"] = policies
    return out


def forward(*upstreams: str | tuple[str, int], **options: Any) -> Doc:
    """A forward action to ``upstreams`` (``(name, weight)`` pairs set weights)."""
    backends = []
    for item in upstreams:
        name, weight = item if isinstance(item, tuple) else (item, None)
        backend: Doc = {"upstream": name}
        if weight is not None:
            backend["weight"] = weight
        backends.append(backend)
    return {"backends": backends, **options}


def headers_policy(request: Doc | None = None, response: Doc | None = None) -> Doc:
    section: Doc = {}
    if request:
        section["request"] = request
    if response:
        section["response"] = response
    return {"headers": section}


def dump(*docs: Doc) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)
