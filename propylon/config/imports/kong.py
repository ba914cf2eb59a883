"""Kong declarative configuration (decK ``kong.yaml``, ``_format_version`` 1.1-3.0).

- ``services[]`` -> Upstreams: ``url`` (or ``protocol``/``host``/``port``/``path``); a host
  that names one of ``upstreams[]`` takes its ``targets`` (``target``, ``weight``) and
  ``algorithm``; ``https`` -> ``tls.sni``.
- ``routes[]`` (in a service, or top level with ``service``) -> one Route each: ``hosts`` ->
  hostnames, each ``paths`` x ``methods`` -> a match (a path starting with ``~`` is a regex
  anchored at the start only, as Kong's router does: ``.*`` appended unless it ends with
  ``$``, ``(?<name>`` as ``(?P<name>``; any other a prefix), ``headers`` -> case-insensitive
  header regexes (Kong compares lower-cased values; ``~*`` values are regexes);
  ``strip_path`` (default true) and the service's ``path`` -> ``rewrite.prefix``.
- plugins (global -> the Gateway ``kong``'s policies; service and route -> rule policies):
  ``rate-limiting`` (second/minute/hour/day; by client address), ``cors``,
  ``ip-restriction``, ``request-transformer`` / ``response-transformer`` (add/remove
  headers), ``key-auth`` (credentials are not imported: Consumers reference secrets).
- A Gateway ``kong`` listening on 8000 (Kong's proxy port) serves the Routes.
"""

from __future__ import annotations

import re
from typing import Any

from propylon.config.imports.common import (
    Output,
    Reader,
    endpoint_of,
    ends_anchored,
    has_top_level_alternation,
    importer,
    note_string_prefix,
    parse_url,
    python_regex,
    rate_limit,
    upstream_spec,
    valid_name,
)
from propylon.config.imports.shape import (
    BOOL,
    INT,
    NUM,
    STR,
    STR_OR_INT,
    AllOf,
    Dict,
    Kinds,
    List,
    Map,
)

_ALGORITHMS = {"round-robin": "round_robin", "least-connections": "least_request"}
_PERIODS = {"second": "1s", "minute": "1m", "hour": "1h", "day": "24h"}
_DROPPED_TOP = ("consumers", "certificates", "ca_certificates", "snis", "vaults",
                "key_sets", "keys", "plugins_consumer")


_STRINGS = List(STR)
_HEADER_LIST = Map({"headers": _STRINGS})
_PLUGIN_CONFIGS = {  # the configuration of the plugins imported, as they are read
    "rate-limiting": Map({"second": NUM, "minute": NUM, "hour": NUM, "day": NUM}),
    "cors": Map({"origins": _STRINGS, "methods": _STRINGS, "headers": _STRINGS,
                 "exposed_headers": _STRINGS, "credentials": BOOL, "max_age": NUM}),
    "ip-restriction": Map({"allow": _STRINGS, "deny": _STRINGS}),
    "request-transformer": Map({v: _HEADER_LIST for v in ("add", "append", "replace",
                                                            "remove")}),
    "response-transformer": Map({v: _HEADER_LIST for v in ("add", "append", "replace",
                                                             "remove")}),
    "key-auth": Map({"key_names": _STRINGS}),
}
_PLUGIN = AllOf((Map({"name": STR, "enabled": BOOL, "config": Map()}, required=("name",)),
                 Kinds({name: Map({"config": config})
                        for name, config in _PLUGIN_CONFIGS.items()}, key="name")))
_ROUTE = Map({"name": STR, "hosts": _STRINGS, "paths": _STRINGS, "methods": _STRINGS,
              "headers": Dict(_STRINGS), "strip_path": BOOL, "plugins": List(_PLUGIN),
              "snis": _STRINGS, "protocols": _STRINGS, "service": Map({"name": STR})})
_SERVICE = Map({"name": STR, "url": STR, "protocol": STR, "host": STR, "port": INT,
                "path": STR, "connect_timeout": NUM, "routes": List(_ROUTE),
                "plugins": List(_PLUGIN)})
_UPSTREAM = Map({"name": STR, "algorithm": STR, "targets": List(
    Map({"target": STR_OR_INT, "weight": INT}, required=("target",)))}, required=("name",))
DECK = Map({"services": List(_SERVICE), "routes": List(_ROUTE), "upstreams": List(_UPSTREAM),
            "plugins": List(_PLUGIN)})


@importer("kong", DECK)
def import_kong(reader: Reader) -> None:
    data = reader.data
    if not isinstance(data, dict):
        reader.warn((), "not a decK document (a mapping with services)")
        return
    out = reader.out
    targets = {u.get("name"): u for u in data.get("upstreams") or () if isinstance(u, dict)}
    services: dict[str, str] = {}
    routes: list[tuple[NodePathT, dict[str, Any], dict[str, Any] | None]] = []
    for i, service in enumerate(data.get("services") or ()):
        upstream = _service(reader, ("services", i), service, targets)
        services[str(service.get("name", upstream))] = upstream
        for j, route in enumerate(service.get("routes") or ()):
            routes.append((("services", i, "routes", j), route, service))
    for i, route in enumerate(data.get("routes") or ()):
        ref = (route.get("service") or {}).get("name") if isinstance(route, dict) else None
        service = next((s for s in data.get("services") or () if s.get("name") == ref), None)
        routes.append((("routes", i), route, service))
    for path, route, service in routes:
        _route(reader, path, route, service, services)
    for key in _DROPPED_TOP:
        if data.get(key):
            reader.warn((key,), f"{key} are not imported (Consumers reference their secrets "
                        "by secretRef; write them by hand)")
    policies = _plugins(reader, ("plugins",), data.get("plugins") or ())
    gateway: dict[str, Any] = {"listeners": [{"name": "proxy", "port": 8000}]}
    if policies:
        gateway["policies"] = policies
    out.add("Gateway", "kong", gateway)


NodePathT = tuple[str | int, ...]


def _service(reader: Reader, at: NodePathT, service: dict[str, Any],
             upstreams: dict[Any, dict[str, Any]]) -> str:
    if "url" in service:
        url = parse_url(str(service["url"]))
        protocol, host, port = url.scheme, url.host, url.port
    else:
        protocol = service.get("protocol", "http")
        host = service.get("host", "")
        port = service.get("port", 443 if protocol == "https" else 80)
    named = upstreams.get(host)
    if named is not None:
        endpoints = [{**endpoint_of(str(t.get("target")), port),
                      "weight": min(int(t.get("weight", 100)), 1000)}
                     for t in named.get("targets") or () if isinstance(t, dict)]
        algorithm = named.get("algorithm", "round-robin")
        balancer = _ALGORITHMS.get(algorithm)
        if balancer is None:
            reader.warn(at, f"upstream {host}: algorithm {algorithm} is imported as "
                        "round_robin (ring_hash needs hashOn, written by hand)")
    else:
        endpoints, balancer = [{"address": host, "port": port}], None
    if protocol not in ("http", "https"):
        reader.warn(at, f"protocol {protocol} is not supported (HTTP and HTTPS only)")
    spec = upstream_spec(endpoints, host if protocol == "https" else None, balancer)
    for field in ("retries", "connect_timeout", "read_timeout", "write_timeout"):
        if field in service and field != "connect_timeout":
            reader.warn((*at, field), f"{field} is not imported (use a rule's forward "
                        "timeout and retries)")
    if "connect_timeout" in service:
        spec["connectTimeout"] = f"{int(service['connect_timeout'])}ms"
    return reader.out.add("Upstream", service.get("name", host), spec)


def _route(reader: Reader, at: NodePathT, route: dict[str, Any],
           service: dict[str, Any] | None, services: dict[str, str]) -> None:
    if service is None:
        reader.warn(at, "route without a service: not imported")
        return
    upstream = services[str(service.get("name"))]
    methods = route.get("methods") or [None]
    headers = []
    for name, values in (route.get("headers") or {}).items():
        header = _header_match(reader, (*at, "headers", name), name, values)
        if header is None:
            reader.warn((*at, "headers", name), "route not imported (a header condition "
                        "Propylon cannot match)")
            return
        headers.append(header)
    matches = []
    for i, path in enumerate(route.get("paths") or ["/"]):
        if path.startswith("~"):
            regex = _path_regex(reader, (*at, "paths", i), path[1:])
            if regex is None:
                continue
            condition = {"regex": regex}
        else:
            condition = {"prefix": path}
            note_string_prefix(reader, (*at, "paths", i), path, "Kong")
        for method in methods:
            match: dict[str, Any] = {"path": condition}
            if method:
                match["method"] = method
            if headers:
                match["headers"] = headers
            matches.append(match)
    if not matches:
        reader.warn(at, "route not imported (none of its paths can be matched)")
        return
    forward: dict[str, Any] = {"backends": [{"upstream": upstream}]}
    service_path = parse_url(service["url"]).path if "url" in service else service.get(
        "path", "/")
    if route.get("strip_path", True):
        if any(p.startswith("~") for p in route.get("paths") or ()):
            reader.warn((*at, "strip_path"), "strip_path with a regex path is not imported")
        else:
            forward["rewrite"] = {"prefix": service_path or "/"}
    elif service_path not in ("/", ""):
        reader.warn((*at, "strip_path"), "a service path without strip_path is not imported")
    rule: dict[str, Any] = {"matches": matches, "forward": forward}
    policies = (_plugins(reader, (*at, "plugins"), route.get("plugins") or ())
                + _plugins(reader, ("services",), service.get("plugins") or ()))
    if policies:
        rule["policies"] = policies
    for field in ("snis", "sources", "destinations", "protocols"):
        if route.get(field) and not (field == "protocols" and set(route[field]) <= {
                "http", "https"}):
            reader.warn((*at, field), f"{field} is not imported")
    spec: dict[str, Any] = {"rules": [rule]}
    if route.get("hosts"):
        spec["hostnames"] = list(route["hosts"])
    reader.out.add("Route", route.get("name") or valid_name(f"{upstream}-route"), spec)


def _plugins(reader: Reader, at: NodePathT, plugins: Any) -> list[dict[str, Any]]:
    policies = []
    for i, plugin in enumerate(plugins if isinstance(plugins, list) else ()):
        if not isinstance(plugin, dict) or plugin.get("enabled") is False:
            continue
        policy = _plugin(plugin.get("name"), plugin.get("config") or {})
        if policy is None:
            reader.warn((*at, i), f"plugin {plugin.get('name')} is not imported (no "
                        "equivalent policy)")
        else:
            policies.append(policy)
    return policies


def _plugin(name: Any, config: dict[str, Any]) -> dict[str, Any] | None:
    if name == "rate-limiting":
        for period, per in _PERIODS.items():
            if config.get(period):
                return rate_limit(int(config[period]), per)
        return None
    if name == "cors":
        cors: dict[str, Any] = {"allowOrigins": config.get("origins") or ["*"]}
        for kong, ours in (("methods", "allowMethods"), ("headers", "allowHeaders"),
                           ("exposed_headers", "exposeHeaders")):
            if config.get(kong):
                cors[ours] = config[kong]
        if config.get("credentials"):
            cors["allowCredentials"] = True
        if config.get("max_age"):
            cors["maxAge"] = f"{int(config['max_age'])}s"
        return {"cors": cors}
    if name == "ip-restriction":
        return {"ipFilter": {k: v for k, v in (("allow", config.get("allow")),
                                              ("deny", config.get("deny"))) if v}}
    if name in ("request-transformer", "response-transformer"):
        direction = "request" if name == "request-transformer" else "response"
        return {"headers": {direction: _header_edits(config)}}
    if name == "key-auth":
        names = config.get("key_names") or ["apikey"]
        return {"apiKey": {"header": names[0]}}
    return None


def _header_edits(config: dict[str, Any]) -> dict[str, Any]:
    edits: dict[str, Any] = {}
    for kong, ours in (("add", "add"), ("append", "add"), ("replace", "set")):
        for item in (config.get(kong) or {}).get("headers") or ():
            name, _, value = str(item).partition(":")
            edits.setdefault(ours, {})[name.strip().lower()] = value.strip()
    removed = (config.get("remove") or {}).get("headers") or []
    if removed:
        edits["remove"] = [str(h).lower() for h in removed]
    return edits


def _path_regex(reader: Reader, at: NodePathT, kong: str) -> str | None:
    """A ``~`` path's regex as Propylon matches it: Kong's router anchors it at the start only
    (it prefixes ``^``) and takes named groups ``(?<name>...)``; Propylon full-matches a path
    regex in Python's syntax. So ``.*`` follows the regex (in a group, each alternative of it
    a prefix) unless it ends with ``$``; None (a warning) when Python cannot compile it."""
    pattern = python_regex(kong)
    if not (ends_anchored(pattern) and not has_top_level_alternation(pattern)):
        pattern = f"(?:{pattern}).*"
    try:
        re.compile(pattern)
    except re.error as exc:
        reader.warn(at, f"regex path ~{kong} is not imported: not a Python regex ({exc}); "
                    "write the match by hand")
        return None
    return pattern


def _header_match(reader: Reader, at: NodePathT, name: str,
                  values: list[str]) -> dict[str, Any] | None:
    """Kong matches a request when the header has one of ``values``, comparing lower-cased
    (``any(lower(http.headers.NAME)) == "value"``); a value ``~*REGEX`` is a regex, lower-cased
    too, found anywhere in the lower-cased header. Propylon compares a ``value`` exactly and
    full-matches a ``regex``: a case-insensitive ``(?i)`` regex of the alternatives."""
    alternatives = []
    for value in map(str, values):
        if value.startswith("~*"):
            alternatives.append(f".*(?:{python_regex(value[2:].lower())}).*")
        else:
            alternatives.append(re.escape(value))
    body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
    regex = f"(?i){body}"
    try:
        re.compile(regex)
    except re.error as exc:
        reader.warn(at, f"header {name}: {values} is not a Python regex ({exc})")
        return None
    return {"name": name, "regex": regex}


__all__ = ["Output", "import_kong"]
