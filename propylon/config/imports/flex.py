"""MuleSoft Flex Gateway, Local Mode declarative resources (``gateway.mulesoft.com/v1alpha1``;
the resource-based and the inline model).

- ``ApiInstance`` -> a Gateway of that name (``spec.address``: its port, and its path as the
  prefix of every rule), a Route, and an Upstream per inline service (``services.<name>.
  address``). ``routes[].rules[]``: ``path`` (a regex) -> ``path.regex``, ``methods`` (a
  regex such as ``GET|POST``) -> one match per method, ``host`` -> hostnames, ``headers``
  -> header regexes; ``config.destinationPath`` -> ``rewrite.prefix`` (only for a route
  without path rules). ``policies[]`` -> the Gateway's policies.
- ``Service`` -> an Upstream (``spec.address``).
- ``PolicyBinding`` -> a Policy targeting the Gateway of ``targetRef.name``.
- policies: ``rate-limiting-flex`` (``rateLimits``), ``ip-allowlist-flex``,
  ``ip-blocklist-flex``, ``cors-flex``, ``header-injection-flex``, ``header-removal-flex``;
  others (and credentials such as basic-auth users) are warnings.
"""

from __future__ import annotations

from typing import Any

from propylon.config.imports.common import (
    Reader,
    importer,
    parse_url,
    rate_limit,
    upstream_spec,
    valid_name,
)
from propylon.config.imports.shape import (
    INT,
    SCALAR,
    STR,
    AllOf,
    Dict,
    Kinds,
    List,
    Map,
)

NodePath = tuple[str | int, ...]


_STRINGS = List(STR)
_METADATA = Map({"name": STR, "namespace": STR})
_HEADERS = List(Map({"key": STR, "value": SCALAR}, required=("key",)))
_POLICY_CONFIGS = {  # the configuration of the policies imported, as they are read
    "rate-limiting-flex": Map({"rateLimits": List(Map({
        "maximumRequests": INT, "timePeriodInMilliseconds": INT}))}),
    "ip-allowlist-flex": Map({"ips": _STRINGS}),
    "ip-blocklist-flex": Map({"ips": _STRINGS}),
    "cors-flex": Map({"originGroups": List(Map({"origins": _STRINGS}))}),
    "header-injection-flex": Map({"inboundHeaders": _HEADERS, "outboundHeaders": _HEADERS}),
    "header-removal-flex": Map({"inboundHeaders": _STRINGS, "outboundHeaders": _STRINGS}),
}
_POLICY = AllOf((
    Map({"policyRef": Map({"name": STR}, required=("name",)), "config": Map(),
         "rules": List(Map())}, required=("policyRef",)),
    Kinds({name: Map({"config": config}) for name, config in _POLICY_CONFIGS.items()},
          key=("policyRef", "name")),
))
_ROUTE = Map({"rules": List(Map({"path": STR, "host": STR, "methods": STR,
                                 "headers": Dict(SCALAR)})),
              "config": Map({"destinationPath": STR})})
FLEX = Kinds({
    "ApiInstance": Map({"metadata": _METADATA, "spec": Map({
        "address": STR, "services": Dict(Map({"address": STR, "routes": List(_ROUTE)})),
        "policies": List(_POLICY)})}),
    "Service": Map({"metadata": _METADATA, "spec": Map({"address": STR})}),
    "PolicyBinding": Map({"metadata": _METADATA, "spec": AllOf((
        Map({"targetRef": Map({"name": STR})}), _POLICY))}),
})


@importer("flex", FLEX)
def import_flex(reader: Reader) -> None:
    data = reader.data
    kind = data.get("kind") if isinstance(data, dict) else None
    meta = data.get("metadata") or {} if isinstance(data, dict) else {}
    namespace = valid_name(meta.get("namespace", "default"))
    spec = data.get("spec") or {} if isinstance(data, dict) else {}
    name = str(meta.get("name", "flex"))
    if kind == "ApiInstance":
        _api_instance(reader, name, namespace, spec)
    elif kind == "Service":
        url = parse_url(str(spec.get("address", "")))
        reader.out.add("Upstream", name, upstream_spec(
            [{"address": url.host, "port": url.port}],
            url.host if url.scheme == "https" else None), namespace)
    elif kind == "PolicyBinding":
        target = (spec.get("targetRef") or {}).get("name")
        section = _policy(reader, ("spec",), spec)
        if section is not None and target:
            reader.out.add("Policy", name, {
                "targetRefs": [{"kind": "Gateway", "name": valid_name(target)}], **section},
                namespace)
    else:
        reader.warn(("kind",), f"kind {kind} is not imported (ApiInstance, Service, "
                    "PolicyBinding)")


def _api_instance(reader: Reader, name: str, namespace: str, spec: dict[str, Any]) -> None:
    url = parse_url(str(spec.get("address", "http://0.0.0.0:8081/")))
    if url.scheme == "https":
        reader.warn(("spec", "address"), "an https address is imported as HTTP (add the "
                    "listener's certificate files)")
    base = url.path.rstrip("/")
    rules = []
    for service_name, service in (spec.get("services") or {}).items():
        at: NodePath = ("spec", "services", service_name)
        service = service or {}
        if service.get("address"):
            target = parse_url(str(service["address"]))
            upstream = reader.out.add("Upstream", service_name, upstream_spec(
                [{"address": target.host, "port": target.port}],
                target.host if target.scheme == "https" else None), namespace)
        else:
            upstream = valid_name(service_name)  # a Service resource of that name
        routes = service.get("routes") or [{}]
        for i, route in enumerate(routes):
            rules.append(_rule(reader, (*at, "routes", i), route, base, upstream))
    if not rules:
        reader.warn(("spec",), "an ApiInstance without services: no route imported")
    gateway: dict[str, Any] = {"listeners": [{"name": "http", "port": url.port}]}
    policies = [p for i, raw in enumerate(spec.get("policies") or ())
                if (p := _policy(reader, ("spec", "policies", i), raw)) is not None]
    if policies:
        gateway["policies"] = policies
    gateway_name = reader.out.add("Gateway", name, gateway, namespace)
    if rules:
        reader.out.add("Route", gateway_name, {"rules": rules}, namespace)


def _rule(reader: Reader, at: NodePath, route: dict[str, Any], base: str,
          upstream: str) -> dict[str, Any]:
    conditions = (route.get("rules") or [{}])
    matches: list[dict[str, Any]] = []
    hostnames: set[str] = set()
    for condition in conditions:
        path = condition.get("path")
        match: dict[str, Any] = {"path": {"regex": base + path} if path else {
            "prefix": base or "/"}}
        headers = [{"name": k, "regex": str(v)} for k, v in (condition.get("headers") or {})
                   .items()]
        if headers:
            match["headers"] = headers
        if condition.get("host"):
            hostnames.add(condition["host"])
        methods = str(condition.get("methods", "")).strip("()").split("|")
        matches += [{**match, "method": m} for m in methods if m] or [match]
    if hostnames:
        reader.warn((*at, "rules"), "host rules are imported as header matches on host")
        for match in matches:
            match.setdefault("headers", []).append(
                {"name": "host", "regex": "|".join(sorted(hostnames))})
    forward: dict[str, Any] = {"backends": [{"upstream": upstream}]}
    destination = (route.get("config") or {}).get("destinationPath")
    if destination:
        if any(c.get("path") for c in conditions):
            reader.warn((*at, "config", "destinationPath"),
                        "destinationPath with path rules is not imported")
        else:
            forward["rewrite"] = {"prefix": destination}
    return {"matches": matches, "forward": forward}


def _policy(reader: Reader, at: NodePath, raw: dict[str, Any]) -> dict[str, Any] | None:
    name = (raw.get("policyRef") or {}).get("name")
    config = raw.get("config") or {}
    if raw.get("rules"):
        reader.warn((*at, "rules"), "policy rules (conditions) are not imported: the policy "
                    "applies to every request")
    if name == "rate-limiting-flex" and config.get("rateLimits"):
        limit = config["rateLimits"][0]
        if len(config["rateLimits"]) > 1 or config.get("keySelector"):
            reader.warn((*at, "config"), "only the first rate limit is imported, by client "
                        "address")
        return rate_limit(int(limit.get("maximumRequests", 1)),
                          f"{int(limit.get('timePeriodInMilliseconds', 1000))}ms")
    if name in ("ip-allowlist-flex", "ip-blocklist-flex"):
        key = "allow" if name == "ip-allowlist-flex" else "deny"
        return {"ipFilter": {key: [ip if "/" in ip else f"{ip}/32" if ":" not in ip
                                   else f"{ip}/128" for ip in config.get("ips") or ()]}}
    if name == "cors-flex":
        origins = [o for g in config.get("originGroups") or () for o in g.get("origins") or ()]
        return {"cors": {"allowOrigins": origins or ["*"]}}
    if name in ("header-injection-flex", "header-removal-flex"):
        return {"headers": _header_edits(name, config)}
    reader.warn(at, f"policy {name} is not imported (no equivalent, or it holds credentials)")
    return None


def _header_edits(name: str, config: dict[str, Any]) -> dict[str, Any]:
    edits: dict[str, Any] = {}
    for flex, direction in (("inboundHeaders", "request"), ("outboundHeaders", "response")):
        items = config.get(flex) or ()
        if not items:
            continue
        if name == "header-injection-flex":
            edits[direction] = {"set": {str(h.get("key")).lower(): str(h.get("value", ""))
                                        for h in items}}
        else:
            edits[direction] = {"remove": [str(h).lower() for h in items]}
    return edits
