"""HTTPRoute and GRPCRoute rules as ``propylon.dev/v1`` Route rules (data, validated later).

Mapping (gateway-api apis/v1 httproute_types.go, grpcroute_types.go):

- ``matches[]``: ``path`` Exact / PathPrefix / RegularExpression -> ``path.exact|prefix|
  regex`` (default ``PathPrefix /``); ``headers[]`` and ``queryParams[]`` Exact /
  RegularExpression -> ``headers[]`` / ``query[]`` ``value|regex``; ``method``. A GRPCRoute
  ``method`` (``service``, ``method``) -> ``matches[].grpc`` when the Route model has it, else
  the same call as a path (``POST /service/method``; a service alone: the prefix
  ``/service/``), which is what a gRPC request's ``:path`` is; serving gRPC needs HTTP/2.
- filters: RequestHeaderModifier / ResponseHeaderModifier -> a rule ``headers`` policy;
  RequestRedirect -> ``redirect`` (``path`` for ReplaceFullPath, ``prefix`` for
  ReplacePrefixMatch when every match is a PathPrefix); URLRewrite -> ``forward.rewrite``
  (``ReplacePrefixMatch`` when every match is a PathPrefix, ``ReplaceFullPath``) and its
  ``hostname`` -> a ``host`` request header set; RequestMirror -> ``forward.mirror`` (one).
- ``backendRefs[]`` with ``weight`` -> ``forward.backends`` (``k8s_backends`` resolves them;
  one that does not resolve becomes an ``unresolved`` backend of its weight, whose share of
  requests answers 500 while the others are served); ``timeouts.request`` ->
  ``forward.timeout``.

What cannot be served as written is never dropped silently: a rule with an unsupported
filter, a field of the wrong type (``k8s_fields.py``), an unresolved mirror, no backend or
no resolved backend answers 500 (a ``directResponse``), and the Route gets
``PartiallyInvalid`` or ``ResolvedRefs=False`` naming why.
"""

from __future__ import annotations

import contextlib
from typing import Any

from propylon.config.k8s_backends import BackendResolver, Use, scaled_weights
from propylon.config.k8s_fields import (
    FieldError,
    choice,
    entries,
    integer,
    items,
    path,
    section,
    text,
    text_or,
    texts,
)
from propylon.config.k8s_status import PARTIALLY_INVALID, RESOLVED_REFS, Condition, Findings
from propylon.config.kubernetes import KubernetesObject
from propylon.config.route import Match

_FAILED = {"status": 500, "body": "route unavailable"}
_UNRESOLVED = "unresolved"  # the upstream name an unresolved backend carries (never looked up)
_PATH_KINDS = {"Exact": "exact", "PathPrefix": "prefix", "RegularExpression": "regex"}
_VALUE_KINDS = {"Exact": "value", "RegularExpression": "regex"}
GRPC_MATCH = "grpc" in Match.model_fields  # the HTTP/2 and gRPC work adds matches[].grpc


class _Unsupported(FieldError):
    """A value conversion cannot serve as written (a filter, a match type)."""


class RuleConverter:
    """Converts the rules of one HTTPRoute or GRPCRoute, reporting into ``findings``."""

    def __init__(self, route: KubernetesObject, resolver: BackendResolver,
                 findings: Findings) -> None:
        self.route, self.resolver, self.findings = route, resolver, findings
        self.grpc = route.kind == "GRPCRoute"

    def rules(self) -> list[dict[str, Any]]:
        """The converted rules; a ``FieldError`` when ``spec.rules`` is not a list."""
        rules = items(self.route.spec, "rules", "spec") or [{}]
        return _unique_names(
            [self._rule(rule, f"spec.rules[{i}]") for i, rule in enumerate(rules)])

    def outlined_rules(self, resolved: dict[tuple[str, str, str], tuple[Use, ...]]
                       ) -> list[dict[str, Any]]:
        """What a part of a configuration that another part converts this object for needs
        of its rules (``gatewayapi.expand_kubernetes``' ``validated``): each rule's name as
        ``rules`` gives it, nothing else, and the Upstreams its backends and mirrors name
        made as ``rules`` makes them (the references' problems are not reported: the other
        part reports them; ``translate/parts.py`` checks that each object used the same).
        ``resolved``: the Upstreams used by each reference resolved so, by the referring
        kind and namespace and the reference as written (each is resolved once, its uses
        made again), while the resolver notes its uses (``BackendResolver.uses``)."""
        rules = items(self.route.spec, "rules", "spec") or [{}]
        kind, namespace, noted = self.route.kind, self.route.namespace, self.resolver.uses
        for raw in rules:
            if not isinstance(raw, dict):
                continue
            try:
                refs = [*items(raw, "backendRefs", ""), *(
                    section(section(f, "requestMirror", ""), "backendRef", "")
                    for f in items(raw, "filters", "")
                    if isinstance(f, dict) and f.get("type") == "RequestMirror")]
            except FieldError:
                continue
            for ref in refs:
                key = (kind, namespace, repr(ref))
                made = resolved.get(key) if noted is not None else None
                if made is not None:
                    for use in made:
                        self.resolver.use(*use)
                    continue
                before = len(noted) if noted is not None else 0
                with contextlib.suppress(FieldError):
                    self.resolver.resolve(ref, kind, namespace)
                if noted is not None:
                    resolved[key] = tuple(noted[before:])
        return _unique_names([
            {"name": raw["name"]} if isinstance(raw, dict) and isinstance(raw.get("name"), str)
            and raw["name"] else {} for raw in rules])

    # -- one rule ------------------------------------------------------------------------
    def _rule(self, raw: Any, at: str) -> dict[str, Any]:
        rule: dict[str, Any] = {}
        try:
            if not isinstance(raw, dict):
                raise FieldError(at, "a rule must be a mapping")
            name = text(raw, "name", at)
            if name:
                rule["name"] = name
            rule["matches"] = self._matches(raw, at)
            action, policies = self._action(raw, at)
        except FieldError as exc:
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

    def _matches(self, raw: dict[str, Any], at: str) -> list[dict[str, Any]]:
        return [self._match(m, where) for where, m in entries(raw, "matches", at)] or [{}]

    def _match(self, raw: dict[str, Any], at: str) -> dict[str, Any]:
        match: dict[str, Any] = {}
        if self.grpc:
            match.update(_grpc_match(section(raw, "method", at), path(at, "method")))
        else:
            where = path(at, "path")
            path_match = section(raw, "path", at)
            kind = choice(path_match, "type", where, _PATH_KINDS, "PathPrefix")
            value = text(path_match, "value", where)
            match["path"] = {kind: "/" if value is None else value}
            method = text(raw, "method", at)
            if method is not None:
                match["method"] = method
            query = _values(raw, "queryParams", at)
            if query:
                match["query"] = query
        headers = _values(raw, "headers", at)
        if headers:
            match["headers"] = headers
        return match

    def _action(self, raw: dict[str, Any], at: str) -> tuple[dict[str, Any], list[Any]]:
        headers: dict[str, Any] = {}
        redirect: dict[str, Any] | None = None
        forward: dict[str, Any] = {}
        for where, item in entries(raw, "filters", at):
            kind = text(item, "type", where)
            if kind == "RequestHeaderModifier":
                headers["request"] = _header_edits(item, "requestHeaderModifier", where,
                                                   headers.get("request"))
            elif kind == "ResponseHeaderModifier":
                headers["response"] = _header_edits(item, "responseHeaderModifier", where,
                                                    headers.get("response"))
            elif kind == "RequestRedirect" and not self.grpc:
                redirect = _redirect(section(item, "requestRedirect", where), raw,
                                     path(where, "requestRedirect"))
            elif kind == "URLRewrite" and not self.grpc:
                rewrite, host = _rewrite(section(item, "urlRewrite", where), raw,
                                         path(where, "urlRewrite"))
                if rewrite:
                    forward["rewrite"] = rewrite
                if host:
                    request = headers.setdefault("request", {})
                    request.setdefault("set", {})["host"] = host
            elif kind == "RequestMirror":
                if "mirror" in forward:
                    raise _Unsupported(where, "more than one RequestMirror")
                forward["mirror"] = self._mirror(section(item, "requestMirror", where),
                                                 path(where, "requestMirror"))
            else:
                raise _Unsupported(f"{where}.type", f"filter {kind!r} is not supported")
        policies = [{"headers": headers}] if headers else []
        if redirect is not None:
            return {"redirect": redirect}, policies
        if not items(raw, "backendRefs", at):
            # the Gateway API: a rule without backendRefs (and no redirect) answers 500
            return {"directResponse": _FAILED}, policies
        return {"forward": self._forward(raw, at, forward)}, policies

    def _forward(self, raw: dict[str, Any], at: str, forward: dict[str, Any]) -> dict[str, Any]:
        upstreams: list[str | None] = []  # None: unresolved (its condition is recorded)
        weights: list[int] = []
        for where, ref in entries(raw, "backendRefs", at):
            if items(ref, "filters", where):
                raise _Unsupported(f"{where}.filters", "filters on a backendRef")
            weight = integer(ref, "weight", where, minimum=0)
            upstreams.append(self._backend(ref, where))
            weights.append(1 if weight is None else weight)
        backends = [{"upstream": u, "weight": w} if u is not None else
                    {"upstream": _UNRESOLVED, "weight": w, "unresolved": True}
                    for u, w in zip(upstreams, scaled_weights(weights), strict=True) if w > 0]
        if not backends:
            raise _Unsupported(f"{at}.backendRefs", "every backend has weight 0")
        if all(backend.get("unresolved") for backend in backends):
            raise _Unresolved(f"{at}.backendRefs")
        forward["backends"] = backends
        timeout = text(section(raw, "timeouts", at), "request", path(at, "timeouts"))
        if timeout is not None:
            forward["timeout"] = timeout
        return forward

    def _mirror(self, raw: dict[str, Any], at: str) -> dict[str, Any]:
        mirror: dict[str, Any] = {"upstream": self._upstream(
            section(raw, "backendRef", at), path(at, "backendRef"))}
        percent = integer(raw, "percent", at, minimum=0)
        fraction = section(raw, "fraction", at)
        if percent is not None:
            mirror["percent"] = percent
        elif fraction:
            where = path(at, "fraction")
            numerator = integer(fraction, "numerator", where, minimum=0) or 0
            denominator = integer(fraction, "denominator", where, minimum=1) or 100
            if numerator > denominator:
                raise FieldError(path(where, "numerator"), "must not exceed the denominator")
            mirror["percent"] = 100 * numerator / denominator  # int / int: never overflows
        return mirror

    def _upstream(self, ref: Any, at: str) -> str:
        upstream = self._backend(ref, at)
        if upstream is None:
            raise _Unresolved(at)
        return upstream

    def _backend(self, ref: Any, at: str) -> str | None:
        """The Upstream ``ref`` resolves to; None (its condition recorded) when it does not."""
        resolved = self.resolver.resolve(ref, self.route.kind, self.route.namespace, at)
        if resolved.problem is not None:
            self.findings.set(self.route.kind, self.route.key, resolved.problem, field=at)
        return resolved.upstream

    def resolved_refs(self) -> None:
        """Record ResolvedRefs=True unless a reference failed (a false one stays)."""
        self.findings.set(self.route.kind, self.route.key,
                          Condition(RESOLVED_REFS, True, "ResolvedRefs"))


def _unique_names(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rules`` without the names more than one of them has (a repeated name would
    invalidate the whole Route)."""
    names = [r["name"] for r in rules if "name" in r]
    for rule in rules:
        if names.count(rule.get("name")) > 1:
            del rule["name"]
    return rules


class _Unresolved(_Unsupported):
    """A backend that did not resolve; its ResolvedRefs condition is already recorded."""

    def __init__(self, field: str) -> None:
        super().__init__(field, "unresolved backend")


def _values(raw: dict[str, Any], key: str, at: str) -> list[dict[str, Any]]:
    values = []
    for where, item in entries(raw, key, at):
        kind = choice(item, "type", where, _VALUE_KINDS, "Exact")
        values.append({"name": text(item, "name", where), kind: text(item, "value", where)})
    return values


def _grpc_match(raw: dict[str, Any], at: str) -> dict[str, Any]:
    if not raw:
        return {"method": "POST"} if not GRPC_MATCH else {}
    service, method = text(raw, "service", at), text(raw, "method", at)
    if text_or(raw, "type", at, "Exact") != "Exact":
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


def _header_edits(item: dict[str, Any], key: str, at: str,
                  edits: dict[str, Any] | None) -> dict[str, Any]:
    raw = section(item, key, at)
    at = path(at, key)
    edits = edits or {}
    for verb in ("set", "add"):
        for where, header in entries(raw, verb, at):
            name = text(header, "name", where)
            if name is None:
                raise FieldError(path(where, "name"), "required field is missing")
            edits.setdefault(verb, {})[name.lower()] = text_or(header, "value", where, "")
    removed = [name.lower() for name in texts(raw, "remove", at)]
    if removed:
        edits["remove"] = [*edits.get("remove", ()), *removed]
    return edits


def _redirect(raw: dict[str, Any], rule: dict[str, Any], at: str) -> dict[str, Any]:
    redirect: dict[str, Any] = {"statusCode": integer(raw, "statusCode", at) or 302}
    for field, name in (("scheme", "scheme"), ("hostname", "host")):
        value = text(raw, field, at)
        if value is not None:
            redirect[name] = value
    port = integer(raw, "port", at)
    if port is not None:
        redirect["port"] = port
    if raw.get("path") is not None:
        key, value = _path_modifier(section(raw, "path", at), rule, path(at, "path"))
        redirect[key] = value
    return redirect


def _rewrite(raw: dict[str, Any], rule: dict[str, Any],
             at: str) -> tuple[dict[str, Any] | None, str | None]:
    rewrite = None
    if raw.get("path") is not None:
        key, value = _path_modifier(section(raw, "path", at), rule, path(at, "path"))
        rewrite = {"fullPath" if key == "path" else "prefix": value}
    return rewrite, text(raw, "hostname", at)


def _path_modifier(replace: dict[str, Any], rule: dict[str, Any], at: str) -> tuple[str, Any]:
    """An HTTPPathModifier (of a redirect or a rewrite) as ``("path", full path)`` or
    ``("prefix", the matched prefix's replacement)``."""
    kind = text(replace, "type", at)
    if kind == "ReplaceFullPath":
        return "path", text(replace, "replaceFullPath", at)
    if kind == "ReplacePrefixMatch":
        if not _all_prefix_matches(rule):
            raise _Unsupported(at, "ReplacePrefixMatch needs PathPrefix matches")
        return "prefix", text_or(replace, "replacePrefixMatch", at, "/")
    raise _Unsupported(at, f"path type {kind!r}")


def _all_prefix_matches(rule: dict[str, Any]) -> bool:
    """Whether every match of ``rule`` (as written, already read by ``_matches``) is a
    PathPrefix one."""
    return all(section(m, "path", "").get("type") in (None, "PathPrefix")
               for _, m in entries(rule, "matches", ""))
