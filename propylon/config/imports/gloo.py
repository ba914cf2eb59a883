"""Gloo Edge resources: ``VirtualService`` and ``RouteTable`` (``gateway.solo.io/v1``),
``Upstream`` (``gloo.solo.io/v1``).

- ``Upstream``: ``static.hosts[]`` (``addr``, ``port``; ``useTls`` -> ``tls``) -> endpoints;
  ``kube`` (``serviceName``, ``serviceNamespace``, ``servicePort``) -> the Service's cluster
  DNS name (or give the Service and its EndpointSlices as Kubernetes input instead).
- ``VirtualService``: ``virtualHost.domains`` -> hostnames (``*``: any host), each route ->
  a rule: ``matchers[]`` (``prefix``/``exact``/``regex``, ``headers``, ``queryParameters``,
  ``methods``), ``routeAction`` (``single`` / ``multi`` destinations with weights),
  ``redirectAction``, ``directResponseAction``, ``delegateAction`` (``ref``, ``selector``)
  -> ``delegate``; options ``prefixRewrite`` (``rewrite.prefix`` for prefix matchers,
  ``rewrite.fullPath`` for exact and regex ones, whose whole path Envoy swaps), ``timeout``,
  ``retries`` (``retryOn`` -> ``on`` and ``statuses``), ``headerManipulation``.
- Gloo answers with the first matching route, Propylon by precedence: a route an earlier one
  shadows in Gloo but that Propylon would pick is a warning (``order.py``).
- ``RouteTable`` -> a RouteTable labelled ``gloo.solo.io/routetable: NAME`` (and its own
  labels), so a ``delegateAction.ref`` becomes a selector of that label.
- A Gateway ``gloo`` listening on 8080 (Gloo's gateway-proxy port) serves every namespace.
"""

from __future__ import annotations

from typing import Any

from propylon.config.duration import parse_duration
from propylon.config.imports.common import (
    Reader,
    importer,
    note_string_prefix,
    upstream_spec,
    valid_name,
)
from propylon.config.imports.order import order_warnings
from propylon.config.imports.shape import (
    BOOL,
    INT,
    SCALAR,
    STR,
    STR_OR_INT,
    Dict,
    Kinds,
    List,
    Map,
)

TABLE_LABEL = "gloo.solo.io/routetable"
NodePath = tuple[str | int, ...]


_STRINGS = List(STR)
_METADATA = Map({"name": STR, "namespace": STR, "labels": Dict(STR)})
_VALUE_MATCH = Map({"name": STR, "value": STR, "regex": BOOL, "invertMatch": BOOL})
_MATCHER = Map({"prefix": STR, "exact": STR, "regex": STR, "headers": List(_VALUE_MATCH),
                "queryParameters": List(_VALUE_MATCH), "methods": _STRINGS})
_UPSTREAM_REF = Map({"upstream": Map({"name": STR, "namespace": STR})})
_HEADER_VALUE = Map({"header": Map({"key": STR, "value": SCALAR}), "append": BOOL})
_ROUTE = Map({
    "name": STR,
    "matchers": List(_MATCHER),
    "routeAction": Map({"single": _UPSTREAM_REF, "multi": Map({"destinations": List(
        Map({"destination": _UPSTREAM_REF, "weight": INT}))})}),
    "redirectAction": Map({"responseCode": STR, "hostRedirect": STR, "pathRedirect": STR,
                           "httpsRedirect": BOOL}),
    "directResponseAction": Map({"status": INT, "body": SCALAR}),
    "delegateAction": Map({"name": STR, "namespace": STR,
                           "ref": Map({"name": STR, "namespace": STR}),
                           "selector": Map({"labels": Dict(STR), "namespaces": _STRINGS})}),
    "options": Map({"prefixRewrite": STR, "timeout": STR,
                    "retries": Map({"retryOn": STR, "numRetries": INT, "perTryTimeout": STR,
                                    "retriableStatusCodes": List(INT),
                                    "retryBackOff": Map({"baseInterval": STR,
                                                         "maxInterval": STR})}),
                    "headerManipulation": Map({
                        "requestHeadersToAdd": List(_HEADER_VALUE),
                        "responseHeadersToAdd": List(_HEADER_VALUE),
                        "requestHeadersToRemove": _STRINGS,
                        "responseHeadersToRemove": _STRINGS})}),
})
GLOO = Kinds({
    "Upstream": Map({"metadata": _METADATA, "spec": Map({
        "static": Map({"hosts": List(Map({"addr": STR, "port": INT}, required=("addr",))),
                       "useTls": BOOL}),
        "kube": Map({"serviceName": STR, "serviceNamespace": STR,
                     "servicePort": STR_OR_INT})})}),
    "VirtualService": Map({"metadata": _METADATA, "spec": Map({"virtualHost": Map({
        "domains": _STRINGS, "routes": List(_ROUTE)})})}),
    "RouteTable": Map({"metadata": _METADATA, "spec": Map({"routes": List(_ROUTE)})}),
})


@importer("gloo", GLOO)
def import_gloo(reader: Reader) -> None:
    data = reader.data
    kind = data.get("kind") if isinstance(data, dict) else None
    meta = data.get("metadata") or {} if isinstance(data, dict) else {}
    namespace = valid_name(meta.get("namespace", "default"))
    spec = data.get("spec") or {} if isinstance(data, dict) else {}
    if kind == "Upstream":
        _upstream(reader, meta, namespace, spec)
    elif kind == "VirtualService":
        host = spec.get("virtualHost") or {}
        rules = _rules(reader, ("spec", "virtualHost", "routes"), host.get("routes") or ())
        route: dict[str, Any] = {"rules": rules}
        domains = [d for d in host.get("domains") or () if d != "*"]
        if domains:
            route["hostnames"] = domains
        if host.get("options"):
            reader.warn(("spec", "virtualHost", "options"),
                        "virtualHost options are not imported (write Policies)")
        if rules:
            reader.out.add("Route", meta.get("name", "virtual-service"), route, namespace)
        _gateway(reader)
    elif kind == "RouteTable":
        rules = _rules(reader, ("spec", "routes"), spec.get("routes") or ())
        labels = {**(meta.get("labels") or {}), TABLE_LABEL: valid_name(meta.get("name"))}
        if rules:
            reader.out.add("RouteTable", meta.get("name", "route-table"), {"rules": rules},
                           namespace, labels)
    else:
        reader.warn(("kind",), f"kind {kind} is not imported (VirtualService, RouteTable, "
                    "Upstream)")


def _gateway(reader: Reader) -> None:
    if not any(r["kind"] == "Gateway" for r in reader.out.resources):
        reader.out.add("Gateway", "gloo", {"listeners": [{"name": "http", "port": 8080}],
                                           "routeSelector": {"namespaces": ["*"]}}, "default")


def _upstream(reader: Reader, meta: dict[str, Any], namespace: str,
              spec: dict[str, Any]) -> None:
    if "static" in spec:
        static = spec["static"]
        endpoints = [{"address": h.get("addr"), "port": int(h.get("port", 80))}
                     for h in static.get("hosts") or ()]
        tls = endpoints[0]["address"] if static.get("useTls") and endpoints else None
    elif "kube" in spec:
        kube = spec["kube"]
        address = f"{kube.get('serviceName')}.{kube.get('serviceNamespace', namespace)}" \
                  ".svc.cluster.local"
        endpoints, tls = [{"address": address, "port": int(kube.get("servicePort", 80))}], None
        reader.warn(("spec", "kube"), "a kube Upstream becomes the Service's cluster DNS name "
                    "(or give its Service and EndpointSlices as Kubernetes input)")
    else:
        reader.warn(("spec",), "only static and kube Upstreams are imported")
        return
    for field in ("healthChecks", "outlierDetection", "loadBalancerConfig", "sslConfig"):
        if field in spec:
            reader.warn(("spec", field), f"{field} is not imported")
    reader.out.add("Upstream", meta.get("name", "upstream"),
                   upstream_spec(endpoints, tls), namespace)


def _rules(reader: Reader, at: NodePath, routes: Any) -> list[dict[str, Any]]:
    made: list[tuple[int, list[dict[str, Any]]]] = []
    for i, route in enumerate(routes if isinstance(routes, list) else ()):
        made.append((i, _rule(reader, (*at, i), route if isinstance(route, dict) else {})))
    order_warnings(reader, at, made)
    return [rule for _, rules in made for rule in rules]


_ROUTE_ACTION_OPTIONS = ("prefixRewrite", "timeout", "retries")


def _rule(reader: Reader, at: NodePath, route: dict[str, Any]) -> list[dict[str, Any]]:
    """The rules of one Gloo route: one, or two when ``prefixRewrite`` applies to prefix and
    to exact or regex matchers (Envoy swaps the matched prefix of the first and the whole
    path of the others); none when it is not imported."""
    matches = [m for i, raw in enumerate(route.get("matchers") or [{"prefix": "/"}])
               for m in _matches(reader, (*at, "matchers", i), raw)]
    rule: dict[str, Any] = {"matches": matches}
    if route.get("name"):
        rule["name"] = valid_name(route["name"])
    options = route.get("options") or {}
    if "routeAction" not in route:
        for field in _ROUTE_ACTION_OPTIONS:
            if field in options:
                reader.warn((*at, "options", field), f"route option {field} is not imported: "
                            + ("Gloo merges a delegating route's options into the "
                               "RouteTable's routes; set it on those" if "delegateAction"
                               in route else "it applies to a routeAction only"))
    if "routeAction" in route:
        rule["forward"] = _forward(reader, (*at, "routeAction"), route["routeAction"], options)
    elif "redirectAction" in route:
        action = route["redirectAction"]
        redirect: dict[str, Any] = {"statusCode": _REDIRECTS.get(
            action.get("responseCode", "MOVED_PERMANENTLY"), 301)}
        if action.get("hostRedirect"):
            redirect["host"] = action["hostRedirect"]
        if action.get("pathRedirect"):
            redirect["path"] = action["pathRedirect"]
        if action.get("httpsRedirect"):
            redirect["scheme"] = "https"
        rule["redirect"] = redirect
    elif "directResponseAction" in route:
        action = route["directResponseAction"]
        rule["directResponse"] = {"status": int(action.get("status", 200)),
                                  "body": str(action.get("body", ""))}
    elif "delegateAction" in route:
        rule["delegate"] = {"selector": _selector(route["delegateAction"])}
    else:
        reader.warn(at, "route without a supported action: not imported")
        return []
    rule = _with_options(reader, at, rule, options)
    rewrite = options.get("prefixRewrite")
    if "forward" in rule and rewrite:  # "" is no rewrite, as in Envoy
        return _rewritten(rule, rewrite)
    return [rule]


def _with_options(reader: Reader, at: NodePath, rule: dict[str, Any],
                  options: dict[str, Any]) -> dict[str, Any]:
    headers = options.get("headerManipulation")
    if headers:
        rule["policies"] = [{"headers": _header_edits(headers)}]
    for field in options:
        if field not in (*_ROUTE_ACTION_OPTIONS, "headerManipulation"):
            reader.warn((*at, "options", field), f"route option {field} is not imported")
    return rule


def _rewritten(rule: dict[str, Any], rewrite: str) -> list[dict[str, Any]]:
    """``prefixRewrite`` as Envoy applies it: the matched prefix of a prefix matcher is
    swapped (``rewrite.prefix``), the whole path of an exact or regex matcher (a regex must
    match the whole path, so the match is the path) is replaced (``rewrite.fullPath``; the
    query is kept either way)."""
    prefixes = [m for m in rule["matches"] if "prefix" in m["path"]]
    others = [m for m in rule["matches"] if "prefix" not in m["path"]]
    made = []
    for matches, kind in ((prefixes, "prefix"), (others, "fullPath")):
        if matches:
            forward = {**rule["forward"], "rewrite": {kind: rewrite}}
            made.append({**rule, "matches": matches, "forward": forward})
    if len(made) == 2 and "name" in rule:
        made[1]["name"] = valid_name(f"{rule['name'][:56]}-path")
    return made


_REDIRECTS = {"MOVED_PERMANENTLY": 301, "FOUND": 302, "SEE_OTHER": 303,
              "TEMPORARY_REDIRECT": 307, "PERMANENT_REDIRECT": 308}


def _matches(reader: Reader, at: NodePath, raw: dict[str, Any]) -> list[dict[str, Any]]:
    path = ({"exact": raw["exact"]} if "exact" in raw else {"regex": raw["regex"]}
            if "regex" in raw else {"prefix": raw.get("prefix", "/")})
    if "prefix" in path:
        note_string_prefix(reader, (*at, "prefix"), path["prefix"], "Gloo (Envoy)")
    base: dict[str, Any] = {"path": path}
    headers = [_value(h) for h in raw.get("headers") or ()]
    if headers:
        base["headers"] = headers
    query = [_value(q) for q in raw.get("queryParameters") or ()]
    if query:
        base["query"] = query
    if any(h.get("invertMatch") for h in raw.get("headers") or ()):
        reader.warn((*at, "headers"), "invertMatch headers are matched as written (not "
                    "inverted)")
    return [{**base, "method": m} for m in raw.get("methods") or ()] or [base]


def _value(raw: dict[str, Any]) -> dict[str, Any]:
    key = "regex" if raw.get("regex") else "value"
    value = raw.get("value")
    return {"name": raw.get("name"), key: value} if value is not None else {
        "name": raw.get("name"), "regex": ".*"}


def _forward(reader: Reader, at: NodePath, action: dict[str, Any],
             options: dict[str, Any]) -> dict[str, Any]:
    if "single" in action:
        destinations = [(action["single"], 1)]
    else:
        destinations = [(d.get("destination") or {}, int(d.get("weight", 1)))
                        for d in (action.get("multi") or {}).get("destinations") or ()]
    backends = []
    for destination, weight in destinations:
        ref = destination.get("upstream") or {}
        if not ref.get("name"):
            reader.warn(at, "only upstream destinations are imported")
            continue
        name = valid_name(ref["name"])
        target = f"{valid_name(ref['namespace'])}/{name}" if ref.get("namespace") else name
        backends.append({"upstream": target, "weight": min(weight, 1000)})
    forward: dict[str, Any] = {"backends": backends}
    if "timeout" in options:
        forward["timeout"] = options["timeout"]
    retries = options.get("retries")
    if isinstance(retries, dict):
        policy = _retries(reader, (*at[:-1], "options", "retries"), retries)
        if policy is not None:
            forward["retries"] = policy
    return forward


# Envoy's retry_on conditions (x-envoy-retry-on, x-envoy-retry-grpc-on) and Propylon's: the
# same names, but Envoy's reset also retries a try that exceeded its per_try_timeout
_RETRY_ON = {"5xx": ["5xx"], "gateway-error": ["gateway-error"],
             "connect-failure": ["connect-failure"], "reset": ["reset", "timeout"],
             **{name: [name] for name in ("cancelled", "deadline-exceeded", "internal",
                                          "resource-exhausted", "unavailable")}}
_RETRY_ON_STATUSES = {"retriable-4xx": [409]}  # Envoy retries 409 only
_RETRY_FIELDS = ("retryOn", "numRetries", "perTryTimeout", "retriableStatusCodes",
                 "retryBackOff")


def _retries(reader: Reader, at: NodePath, raw: dict[str, Any]) -> dict[str, Any] | None:
    """Gloo's RetryPolicy (Envoy's): ``retryOn`` (comma-separated conditions) ->
    ``retries.on`` and ``statuses``; ``numRetries`` (0: 1, as Gloo does), ``perTryTimeout``,
    ``retryBackOff``. None when Envoy would retry nothing (no ``retryOn``)."""
    for field in raw:
        if field not in _RETRY_FIELDS:
            reader.warn((*at, field), f"retries.{field} is not imported")
    conditions = [c.strip() for c in str(raw.get("retryOn") or "").split(",") if c.strip()]
    on: list[str] = []
    statuses: list[int] = []
    for condition in conditions:
        if condition in _RETRY_ON:
            on += [c for c in _RETRY_ON[condition] if c not in on]
        elif condition in _RETRY_ON_STATUSES:
            statuses += _RETRY_ON_STATUSES[condition]
        elif condition == "retriable-status-codes":
            codes = [int(c) for c in raw.get("retriableStatusCodes") or ()]
            if not codes:
                reader.warn((*at, "retryOn"), "retryOn retriable-status-codes without "
                            "retriableStatusCodes retries only the codes a request's "
                            "x-envoy-retriable-status-codes names: not imported")
            statuses += codes
        else:
            reader.warn((*at, "retryOn"), f"retryOn {condition} is not imported (no "
                        "equivalent retry condition" + (
                            "; reset retries every reset, not only REFUSED_STREAM: add it to "
                            "retries.on if that is acceptable" if condition == "refused-stream"
                            else "") + ")")
    if not on and not statuses:
        reader.warn(at, "retries not imported: Envoy retries nothing without a retryOn "
                    "condition it can match here" if conditions else "retries not imported: "
                    "without retryOn Envoy retries nothing (unless a request's x-envoy-retry-on "
                    "asks)")
        return None
    attempts = int(raw.get("numRetries") or 1)
    if attempts > 10:
        reader.warn((*at, "numRetries"), f"numRetries {attempts} is imported as 10 (the most "
                    "Propylon retries)")
        attempts = 10
    policy: dict[str, Any] = {"attempts": attempts, "on": on}
    if statuses:
        policy["statuses"] = sorted(set(statuses))
    if raw.get("perTryTimeout"):
        policy["perTryTimeout"] = raw["perTryTimeout"]
    backoff = raw.get("retryBackOff") or {}
    if backoff.get("baseInterval"):
        base = backoff["baseInterval"]
        # Envoy's maxInterval defaults to 10 times the base interval
        policy["backoff"] = {"baseInterval": base, "maxInterval": backoff.get(
            "maxInterval") or f"{round(parse_duration(base) * 10_000)}ms"}
    elif backoff.get("maxInterval"):
        policy["backoff"] = {"maxInterval": backoff["maxInterval"]}
    return policy


def _selector(action: dict[str, Any]) -> dict[str, Any]:
    if "ref" in action or "name" in action:
        ref = action.get("ref") or action
        selector: dict[str, Any] = {"matchLabels": {TABLE_LABEL: valid_name(ref.get("name"))}}
        if ref.get("namespace"):
            selector["namespaces"] = [valid_name(ref["namespace"])]
        return selector
    raw = action.get("selector") or {}
    selector = {"matchLabels": dict(raw.get("labels") or {})}
    if raw.get("namespaces"):
        selector["namespaces"] = list(raw["namespaces"])
    return selector


def _header_edits(raw: dict[str, Any]) -> dict[str, Any]:
    edits: dict[str, Any] = {}
    for gloo, direction in (("requestHeadersToAdd", "request"),
                            ("responseHeadersToAdd", "response")):
        for item in raw.get(gloo) or ():
            header = item.get("header") or {}
            verb = "add" if item.get("append", True) else "set"
            edits.setdefault(direction, {}).setdefault(verb, {})[
                str(header.get("key")).lower()] = str(header.get("value", ""))
    for gloo, direction in (("requestHeadersToRemove", "request"),
                            ("responseHeadersToRemove", "response")):
        if raw.get(gloo):
            edits.setdefault(direction, {})["remove"] = [h.lower() for h in raw[gloo]]
    return edits
