"""APISIX standalone configuration (``apisix.yaml``: ``routes``, ``upstreams``,
``services``, ending with ``#END``).

- ``upstreams[]`` (and a route's or service's inline ``upstream``) -> Upstreams: ``nodes``
  as a map ``"host:port": weight`` or a list of ``{host, port, weight}``; ``type``
  roundrobin / least_conn (chash: imported as round_robin, with a warning); ``scheme: https``
  -> ``tls``.
- ``routes[]`` -> one Route each: ``uri``/``uris`` (``/x/*`` a prefix, else exact),
  ``host``/``hosts``, ``methods``, ``upstream_id``/``upstream``/``service_id``.
- plugins: ``limit-count`` (count per time_window), ``cors``, ``ip-restriction``,
  ``proxy-rewrite`` (``uri`` -> a full-path rewrite, ``headers`` set/add/remove),
  ``response-rewrite`` headers, ``key-auth``; others are warnings.
- A Gateway ``apisix`` listening on 9080 (APISIX's port) serves the Routes.
"""

from __future__ import annotations

from typing import Any

from propylon.config.imports.common import (
    Reader,
    endpoint_of,
    importer,
    note_string_prefix,
    rate_limit,
    upstream_spec,
)
from propylon.config.imports.shape import (
    INT,
    SCALAR,
    STR,
    STR_OR_INT,
    Dict,
    List,
    Map,
    OneOf,
)

_TYPES = {"roundrobin": "round_robin", "least_conn": "least_request"}
NodePath = tuple[str | int, ...]


_STRINGS = List(STR)
# proxy-rewrite / response-rewrite headers: set/add/remove, or (the old form) a map to set
_HEADERS = Dict(OneOf((SCALAR, Dict(SCALAR), _STRINGS)),
                by_key={"set": Dict(SCALAR), "add": Dict(SCALAR), "remove": _STRINGS})
_PLUGIN_CONFIGS = {  # the configuration of the plugins imported, as they are read
    "limit-count": Map({"count": INT, "time_window": INT}),
    "cors": Map({"allow_origins": STR, "allow_methods": STR, "max_age": INT}),
    "ip-restriction": Map({"whitelist": _STRINGS, "blacklist": _STRINGS}),
    "proxy-rewrite": Map({"uri": STR, "headers": _HEADERS}),
    "response-rewrite": Map({"headers": _HEADERS}),
    "key-auth": Map({"header": STR}),
}
_PLUGINS = Dict(Map({"_meta": Map({"disable": SCALAR})}), by_key={
    name: Map({**config.fields, "_meta": Map({"disable": SCALAR})})
    for name, config in _PLUGIN_CONFIGS.items()})
_UPSTREAM = Map({"id": STR_OR_INT, "name": STR, "type": STR, "scheme": STR, "nodes": OneOf((
    Dict(INT), List(Map({"host": STR, "port": INT, "weight": INT}, required=("host",)))))})
_ROUTE = Map({"id": STR_OR_INT, "name": STR, "uri": STR, "uris": _STRINGS, "host": STR,
              "hosts": _STRINGS, "methods": _STRINGS, "upstream_id": STR_OR_INT,
              "service_id": STR_OR_INT, "upstream": _UPSTREAM, "plugins": _PLUGINS})
_SERVICE = Map({"id": STR_OR_INT, "upstream_id": STR_OR_INT, "upstream": _UPSTREAM,
                "plugins": _PLUGINS})
APISIX_YAML = Map({"routes": List(_ROUTE), "upstreams": List(_UPSTREAM),
                   "services": List(_SERVICE)})


@importer("apisix", APISIX_YAML)
def import_apisix(reader: Reader) -> None:
    data = reader.data
    if not isinstance(data, dict):
        reader.warn((), "not an apisix.yaml document (a mapping with routes)")
        return
    upstreams: dict[str, str] = {}
    for i, upstream in enumerate(data.get("upstreams") or ()):
        upstreams[str(upstream.get("id"))] = _upstream(
            reader, ("upstreams", i), upstream, f"upstream-{upstream.get('id')}")
    services = {str(s.get("id")): (i, s) for i, s in enumerate(data.get("services") or ())}
    for i, route in enumerate(data.get("routes") or ()):
        _route(reader, ("routes", i), route, upstreams, services)
    for key in ("consumers", "ssls", "global_rules", "plugin_configs", "stream_routes"):
        if data.get(key):
            reader.warn((key,), f"{key} are not imported")
    reader.out.add("Gateway", "apisix", {"listeners": [{"name": "http", "port": 9080}]})


def _upstream(reader: Reader, at: NodePath, upstream: dict[str, Any], name: str) -> str:
    nodes = upstream.get("nodes") or {}
    if isinstance(nodes, dict):
        endpoints = [{**endpoint_of(str(k)), "weight": min(int(w), 1000)}
                     for k, w in nodes.items()]
    else:
        endpoints = [{"address": n.get("host"), "port": int(n.get("port", 80)),
                      "weight": min(int(n.get("weight", 1)), 1000)} for n in nodes]
    kind = upstream.get("type", "roundrobin")
    if kind not in _TYPES:
        reader.warn((*at, "type"), f"type {kind} is imported as round_robin (ring_hash needs "
                    "hashOn, written by hand)")
    tls = endpoints[0]["address"] if upstream.get("scheme") == "https" and endpoints else None
    for field in ("checks", "retries", "timeout", "pass_host", "discovery_type"):
        if field in upstream:
            reader.warn((*at, field), f"{field} is not imported")
    spec = upstream_spec(endpoints, tls, _TYPES.get(kind))
    return reader.out.add("Upstream", upstream.get("name") or name, spec)


def _route(reader: Reader, at: NodePath, route: dict[str, Any], upstreams: dict[str, str],
           services: dict[str, tuple[int, dict[str, Any]]]) -> None:
    service_at, service = services.get(str(route.get("service_id")), (None, {}))
    plugins = {**(service.get("plugins") or {}), **(route.get("plugins") or {})}
    if "upstream" in route:
        upstream = _upstream(reader, (*at, "upstream"), route["upstream"],
                             f"route-{route.get('id')}")
    elif route.get("upstream_id") is not None:
        upstream = upstreams.get(str(route["upstream_id"]), "")
    elif "upstream" in service:
        upstream = _upstream(reader, ("services", service_at or 0, "upstream"),
                             service["upstream"], f"service-{route.get('service_id')}")
    else:
        upstream = upstreams.get(str(service.get("upstream_id")), "")
    if not upstream:
        reader.warn(at, "route without a known upstream: not imported")
        return
    uris = route.get("uris") or [route.get("uri", "/*")]
    methods = route.get("methods") or [None]
    matches = []
    for i, uri in enumerate(uris):
        path = {"prefix": uri[:-1] or "/"} if uri.endswith("*") else {"exact": uri}
        if "prefix" in path:
            note_string_prefix(reader, (*at, "uris", i) if "uris" in route else (*at, "uri"),
                               path["prefix"], "APISIX")
        for method in methods:
            matches.append({"path": path, **({"method": method} if method else {})})
    forward: dict[str, Any] = {"backends": [{"upstream": upstream}]}
    rule: dict[str, Any] = {"matches": matches, "forward": forward}
    policies = _plugins(reader, (*at, "plugins"), plugins, forward)
    if policies:
        rule["policies"] = policies
    if route.get("vars") or route.get("remote_addrs") or route.get("filter_func"):
        reader.warn(at, "vars, remote_addrs and filter_func are not imported")
    spec: dict[str, Any] = {"rules": [rule]}
    hosts = route.get("hosts") or ([route["host"]] if route.get("host") else [])
    if hosts:
        spec["hostnames"] = hosts
    reader.out.add("Route", route.get("name") or f"route-{route.get('id')}", spec)


def _plugins(reader: Reader, at: NodePath, plugins: dict[str, Any],
             forward: dict[str, Any]) -> list[dict[str, Any]]:
    policies: list[dict[str, Any]] = []
    for name, config in plugins.items():
        config = config or {}
        if config.get("_meta", {}).get("disable"):
            continue
        policy = _plugin(reader, (*at, name), name, config, forward)
        if policy is not None:
            policies.append(policy)
    return policies


def _plugin(reader: Reader, at: NodePath, name: str, config: dict[str, Any],
            forward: dict[str, Any]) -> dict[str, Any] | None:
    if name == "limit-count" and config.get("count"):
        return rate_limit(int(config["count"]), f"{int(config.get('time_window', 60))}s")
    if name == "cors":
        origins = str(config.get("allow_origins", "*")).split(",")
        cors: dict[str, Any] = {"allowOrigins": [o.strip() for o in origins]}
        if config.get("allow_methods") not in (None, "*", "**"):
            cors["allowMethods"] = str(config["allow_methods"]).split(",")
        if config.get("max_age"):
            cors["maxAge"] = f"{int(config['max_age'])}s"
        return {"cors": cors}
    if name == "ip-restriction":
        return {"ipFilter": {k: v for k, v in (("allow", config.get("whitelist")),
                                              ("deny", config.get("blacklist"))) if v}}
    if name == "proxy-rewrite":
        if config.get("uri"):
            forward["rewrite"] = {"fullPath": config["uri"]}
        if config.get("regex_uri") or config.get("host"):
            reader.warn(at, "proxy-rewrite regex_uri and host are not imported")
        edits = _header_edits(config.get("headers") or {})
        return {"headers": {"request": edits}} if edits else None
    if name == "response-rewrite":
        edits = _header_edits(config.get("headers") or {})
        if config.get("body") or config.get("status_code"):
            reader.warn(at, "response-rewrite body and status_code are not imported")
        return {"headers": {"response": edits}} if edits else None
    if name == "key-auth":
        return {"apiKey": {"header": config.get("header", "apikey")}}
    reader.warn(at, f"plugin {name} is not imported (no equivalent policy)")
    return None


def _header_edits(headers: dict[str, Any]) -> dict[str, Any]:
    if not any(k in headers for k in ("set", "add", "remove")):
        headers = {"set": headers}  # the old form: a map of headers to set
    edits: dict[str, Any] = {}
    for verb in ("set", "add"):
        for key, value in (headers.get(verb) or {}).items():
            edits.setdefault(verb, {})[str(key).lower()] = str(value)
    if headers.get("remove"):
        edits["remove"] = [str(h).lower() for h in headers["remove"]]
    return edits
