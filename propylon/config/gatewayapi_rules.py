"""HTTPRoute and GRPCRoute rules as ``propylon.dev/v1`` Route rules (data, validated later).

Mapping (gateway-api apis/v1 httproute_types.go, grpcroute_types.go):

- ``matches[]``: ``path`` Exact / PathPrefix / RegularExpression -> ``path.exact|prefix|
  regex`` (default ``PathPrefix /``); ``headers[]`` and ``queryParams[]`` Exact /
  RegularExpression -> ``headers[]`` / ``query[]`` ``value|regex``; ``method``. A GRPCRoute
  ``method`` (``service``, ``method``) -> ``matches[].grpc`` when the Route model has it, else
  the same call as a path (``POST /service/method``; a service alone: the prefix
  ``/service/``), which is what a gRPC request's ``:path`` is; serving gRPC needs HTTP/2.
- filters: RequestHeaderModifier / ResponseHeaderModifier -> a rule ``headers`` policy;
  RequestRedirect -> ``redirect`` (ReplaceFullPath only); URLRewrite -> ``forward.rewrite``
  (``ReplacePrefixMatch`` when every match is a PathPrefix, ``ReplaceFullPath``) and its
  ``hostname`` -> a ``host`` request header set; RequestMirror -> ``forward.mirror`` (one).
- ``backendRefs[]`` with ``weight`` -> ``forward.backends`` (``k8s_backends`` resolves them);
  ``timeouts.request`` -> ``forward.timeout``.

What cannot be served as written is never dropped silently: a rule with an unsupported
filter, an unresolved backend or no backend answers 500 (a ``directResponse``), and the
Route gets ``PartiallyInvalid`` or ``ResolvedRefs=False`` naming why. Every backend of a rule
answers 500 when one of them is unresolved (the Gateway API asks for 500 on that backend's
share only; an Upstream cannot express a share that fails).
"""

from __future__ import annotations

from typing import Any

from propylon.config.k8s_backends import BackendResolver, scaled_weights
from propylon.config.k8s_status import PARTIALLY_INVALID, RESOLVED_REFS, Condition, Findings
from propylon.config.kubernetes import KubernetesObject, mapping
from propylon.config.route import Match

_FAILED = {"status": 500, "body": "route unavailable"}
_PATH_KINDS = {"Exact": "exact", "PathPrefix": "prefix", "RegularExpression": "regex"}
_VALUE_KINDS = {"Exact": "value", "RegularExpression": "regex"}
GRPC_MATCH = "grpc" in Match.model_fields  # the HTTP/2 and gRPC work adds matches[].grpc


class _Unsupported(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RuleConverter:
    """Converts the rules of one HTTPRoute or GRPCRoute, reporting into ``findings``."""

    def __init__(self, route: KubernetesObject, resolver: BackendResolver,
                 findings: Findings) -> None:
        self.route, self.resolver, self.findings = route, resolver, findings
        self.grpc = route.kind == "GRPCRoute"

    def rules(self) -> list[dict[str, Any]]:
        raw = self.route.spec.get("rules")
        rules = raw if isinstance(raw, list) and raw else [{}]
        converted = [self._rule(rule, f"spec.rules[{i}]") for i, rule in enumerate(rules)]
        names = [r["name"] for r in converted if "name" in r]
        for rule in converted:  # a repeated name would invalidate the whole Route
            if names.count(rule.get("name")) > 1:
                del rule["name"]
        return converted

    # -- one rule ------------------------------------------------------------------------
    def _rule(self, raw: Any, at: str) -> dict[str, Any]:
        raw = raw if isinstance(raw, dict) else {}
        rule: dict[str, Any] = {}
        if isinstance(raw.get("name"), str):
            rule["name"] = raw["name"]
        try:
            rule["matches"] = self._matches(raw.get("matches"), at)
            action, policies = self._action(raw, at)
        except _Unsupported as exc:
            if not isinstance(exc, _Unresolved):  # an unresolved one is already recorded
                self._partly_invalid(exc.field, str(exc))
            return {**rule, "matches": rule.get("matches") or [{}], "directResponse": _FAILED}
        rule.update(action)
        if policies:
            rule["policies"] = policies
        return rule

    def _partly_invalid(self, field: str, message: str) -> None:
        self.findings.set(self.route.kind, self.route.key, Condition(
            PARTIALLY_INVALID, True, "UnsupportedValue",
            f"{field}: {message}; this rule answers 500"), field=field, warning=True)

    def _matches(self, raw: Any, at: str) -> list[dict[str, Any]]:
        if not isinstance(raw, list) or not raw:
            return [{}]
        return [self._match(m if isinstance(m, dict) else {}, f"{at}.matches[{i}]")
                for i, m in enumerate(raw)]

    def _match(self, raw: dict[str, Any], at: str) -> dict[str, Any]:
        match: dict[str, Any] = {}
        if self.grpc:
            match.update(_grpc_match(raw.get("method"), f"{at}.method"))
        else:
            path = mapping(raw.get("path"))
            kind = _PATH_KINDS.get(path.get("type", "PathPrefix"))
            if kind is None:
                raise _Unsupported(f"{at}.path.type", f"path type {path.get('type')!r}")
            match["path"] = {kind: path.get("value", "/")}
            if raw.get("method") is not None:
                match["method"] = raw["method"]
            if raw.get("queryParams"):
                match["query"] = _values(raw["queryParams"], f"{at}.queryParams")
        if raw.get("headers"):
            match["headers"] = _values(raw["headers"], f"{at}.headers")
        return match

    def _action(self, raw: dict[str, Any], at: str) -> tuple[dict[str, Any], list[Any]]:
        headers: dict[str, Any] = {}
        redirect: dict[str, Any] | None = None
        forward: dict[str, Any] = {}
        for i, item in enumerate(raw.get("filters") or ()):
            where = f"{at}.filters[{i}]"
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "RequestHeaderModifier":
                headers["request"] = _header_edits(item.get("requestHeaderModifier"),
                                                   headers.get("request"))
            elif kind == "ResponseHeaderModifier":
                headers["response"] = _header_edits(item.get("responseHeaderModifier"),
                                                    headers.get("response"))
            elif kind == "RequestRedirect" and not self.grpc:
                redirect = _redirect(item.get("requestRedirect") or {}, where)
            elif kind == "URLRewrite" and not self.grpc:
                rewrite, host = _rewrite(item.get("urlRewrite") or {}, raw, where)
                if rewrite:
                    forward["rewrite"] = rewrite
                if host:
                    request = headers.setdefault("request", {})
                    request.setdefault("set", {})["host"] = host
            elif kind == "RequestMirror":
                if "mirror" in forward:
                    raise _Unsupported(where, "more than one RequestMirror")
                forward["mirror"] = self._mirror(item.get("requestMirror") or {}, where)
            else:
                raise _Unsupported(f"{where}.type", f"filter {kind!r} is not supported")
        policies = [{"headers": headers}] if headers else []
        if redirect is not None:
            return {"redirect": redirect}, policies
        refs = raw.get("backendRefs")
        if not isinstance(refs, list) or not refs:
            # the Gateway API: a rule without backendRefs (and no redirect) answers 500
            return {"directResponse": _FAILED}, policies
        return {"forward": self._forward(raw, at, forward)}, policies

    def _forward(self, raw: dict[str, Any], at: str, forward: dict[str, Any]) -> dict[str, Any]:
        refs = raw["backendRefs"]
        upstreams: list[str] = []
        weights: list[int] = []
        for i, ref in enumerate(refs):
            where = f"{at}.backendRefs[{i}]"
            if isinstance(ref, dict) and ref.get("filters"):
                raise _Unsupported(f"{where}.filters", "filters on a backendRef")
            upstreams.append(self._upstream(ref, where))
            weight = ref.get("weight", 1) if isinstance(ref, dict) else 1
            weights.append(weight if isinstance(weight, int) and weight >= 0 else 1)
        backends = [{"upstream": u, "weight": w}
                    for u, w in zip(upstreams, scaled_weights(weights), strict=True) if w > 0]
        if not backends:
            raise _Unsupported(f"{at}.backendRefs", "every backend has weight 0")
        forward["backends"] = backends
        timeouts = mapping(raw.get("timeouts"))
        if isinstance(timeouts.get("request"), str):
            forward["timeout"] = timeouts["request"]
        return forward

    def _mirror(self, raw: dict[str, Any], at: str) -> dict[str, Any]:
        mirror: dict[str, Any] = {"upstream": self._upstream(raw.get("backendRef"),
                                                             f"{at}.requestMirror.backendRef")}
        if isinstance(raw.get("percent"), int):
            mirror["percent"] = raw["percent"]
        elif isinstance(raw.get("fraction"), dict):
            fraction = raw["fraction"]
            mirror["percent"] = 100.0 * fraction.get("numerator", 0) / (
                fraction.get("denominator") or 100)
        return mirror

    def _upstream(self, ref: Any, at: str) -> str:
        resolved = self.resolver.resolve(ref, self.route.kind, self.route.namespace)
        if resolved.problem is not None:
            self.findings.set(self.route.kind, self.route.key, resolved.problem, field=at)
            raise _Unresolved(at)
        assert resolved.upstream is not None
        return resolved.upstream

    def resolved_refs(self) -> None:
        """Record ResolvedRefs=True unless a reference failed (a false one stays)."""
        self.findings.set(self.route.kind, self.route.key,
                          Condition(RESOLVED_REFS, True, "ResolvedRefs"))


class _Unresolved(_Unsupported):
    """A backend that did not resolve; its ResolvedRefs condition is already recorded."""

    def __init__(self, field: str) -> None:
        super().__init__(field, "unresolved backend")


def _values(raw: Any, at: str) -> list[dict[str, Any]]:
    values = []
    for i, item in enumerate(raw if isinstance(raw, list) else ()):
        item = item if isinstance(item, dict) else {}
        kind = _VALUE_KINDS.get(item.get("type", "Exact"))
        if kind is None:
            raise _Unsupported(f"{at}[{i}].type", f"match type {item.get('type')!r}")
        values.append({"name": item.get("name"), kind: item.get("value")})
    return values


def _grpc_match(raw: Any, at: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {"method": "POST"} if not GRPC_MATCH else {}
    service, method = raw.get("service"), raw.get("method")
    if raw.get("type", "Exact") != "Exact":
        if GRPC_MATCH:
            raise _Unsupported(f"{at}.type", "RegularExpression gRPC method matches")
        regex = f"/{service or '[^/]+'}/{method or '[^/]+'}"
        return {"path": {"regex": regex}, "method": "POST"}
    if GRPC_MATCH:
        grpc = {k: v for k, v in (("service", service), ("method", method)) if v}
        return {"grpc": grpc} if grpc else {}
    if service and method:
        return {"path": {"exact": f"/{service}/{method}"}, "method": "POST"}
    if service:
        return {"path": {"prefix": f"/{service}"}, "method": "POST"}
    if method:
        return {"path": {"regex": f"/[^/]+/{method}"}, "method": "POST"}
    return {"method": "POST"}


def _header_edits(raw: Any, edits: dict[str, Any] | None) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    edits = edits or {}
    for verb in ("set", "add"):
        for item in raw.get(verb) or ():
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                edits.setdefault(verb, {})[item["name"].lower()] = item.get("value", "")
    removed = [name.lower() for name in raw.get("remove") or () if isinstance(name, str)]
    if removed:
        edits["remove"] = [*edits.get("remove", ()), *removed]
    return edits


def _redirect(raw: dict[str, Any], at: str) -> dict[str, Any]:
    redirect: dict[str, Any] = {"statusCode": raw.get("statusCode", 302)}
    for field, name in (("scheme", "scheme"), ("hostname", "host"), ("port", "port")):
        if raw.get(field) is not None:
            redirect[name] = raw[field]
    path = raw.get("path")
    if isinstance(path, dict):
        if path.get("type") == "ReplaceFullPath":
            redirect["path"] = path.get("replaceFullPath")
        else:
            raise _Unsupported(f"{at}.requestRedirect.path",
                               f"redirect path type {path.get('type')!r} (only ReplaceFullPath)")
    return redirect


def _rewrite(raw: dict[str, Any], rule: dict[str, Any],
             at: str) -> tuple[dict[str, Any] | None, str | None]:
    path = raw.get("path")
    rewrite = None
    if isinstance(path, dict):
        if path.get("type") == "ReplaceFullPath":
            rewrite = {"fullPath": path.get("replaceFullPath")}
        elif path.get("type") == "ReplacePrefixMatch":
            if not _all_prefix_matches(rule):
                raise _Unsupported(f"{at}.urlRewrite.path",
                                   "ReplacePrefixMatch needs PathPrefix matches")
            rewrite = {"prefix": path.get("replacePrefixMatch") or "/"}
        else:
            raise _Unsupported(f"{at}.urlRewrite.path", f"path type {path.get('type')!r}")
    hostname = raw.get("hostname")
    return rewrite, hostname if isinstance(hostname, str) else None


def _all_prefix_matches(rule: dict[str, Any]) -> bool:
    matches = rule.get("matches") or [{}]
    return all(
        (m.get("path") or {}).get("type", "PathPrefix") == "PathPrefix"
        for m in matches if isinstance(m, dict)
    )
