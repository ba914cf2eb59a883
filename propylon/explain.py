"""``propylon explain``: what a request would get, and why, without sending it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from propylon import ir
from propylon.proxy.hostport import split_host
from propylon.runtime.compile import Services, compile_gateway
from propylon.runtime.compiled import FORWARD, REDIRECT, CompiledRoute


class _Request:
    """A ``RequestView`` over an imagined request."""

    def __init__(self, headers: dict[str, str], query: str, client_ip: str) -> None:
        self.headers = headers
        self.params = dict(parse_qsl(query, keep_blank_values=True))
        self.client_ip = client_ip

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def query_param(self, name: str) -> str | None:
        return self.params.get(name)


@dataclass
class Explanation:
    lines: list[str] = field(default_factory=list)
    matched: bool = False


def explain(
    snapshot: ir.SnapshotIR,
    method: str,
    url: str,
    headers: dict[str, str],
    client_ip: str = "127.0.0.1",
) -> Explanation:
    parts = urlsplit(url)
    host_value = headers.get("host") or parts.netloc
    host, port = split_host(host_value.encode("latin-1"))
    port = port or parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    request = _Request({**headers, "host": host_value}, parts.query, client_ip)
    out = Explanation()
    candidates = [g for g in snapshot.gateways if any(lis.port == port for lis in g.listeners)]
    if not candidates:
        ports = sorted({lis.port for g in snapshot.gateways for lis in g.listeners})
        out.lines.append(f"no Gateway listens on port {port} (listening: {ports})")
        return out
    loop = asyncio.new_event_loop()
    try:
        for gateway in candidates:
            _explain_gateway(out, gateway, loop, host, method.upper(), path, request)
    finally:
        loop.close()
    return out


def _explain_gateway(
    out: Explanation,
    gateway: ir.GatewayIR,
    loop: asyncio.AbstractEventLoop,
    host: str,
    method: str,
    path: str,
    request: _Request,
) -> None:
    runtime = compile_gateway(gateway, Services.scratch(loop))
    out.lines.append(f"Gateway {gateway.key}")
    route = runtime.router.match(host, method, path, request)
    if route is None:
        out.lines.append(f"  no rule matches host {host!r}, {method} {path}: 404")
        _policies(out, gateway.default_policies, "  Gateway policies on the 404")
        return
    out.matched = True
    rule = next(r for r in gateway.rules if r.id == route.rule_id)
    out.lines.append(f"  rule     {rule.id} ({rule.route}, rule {route.rule_label})")
    if rule.delegated_from:
        out.lines.append(f"  via      {' -> '.join(rule.delegated_from)}")
    if rule.replaced:
        out.lines.append("  INVALID  the resource is invalid: the rule answers the fixed error")
    _policies(out, rule.policies, "  policies (in order)")
    _action(out, route, request)


def _policies(out: Explanation, policies: tuple[ir.PolicyIR, ...], title: str) -> None:
    if not policies:
        out.lines.append(f"{title}: none")
        return
    out.lines.append(f"{title}:")
    for i, policy in enumerate(policies, 1):
        out.lines.append(f"    {i}. {policy.type}  from {policy.source}")


def _action(out: Explanation, route: CompiledRoute, request: _Request) -> None:
    if route.kind == REDIRECT:
        assert route.redirect is not None
        out.lines.append(f"  action   redirect {route.redirect}")
        return
    if route.kind != FORWARD:
        out.lines.append(f"  action   direct response {route.direct_status}")
        return
    cluster = route.single_cluster or route.backends.pick()
    if cluster is None:
        out.lines.append("  action   forward, but every backend has weight 0: 503")
        return
    key = None
    if cluster.hash_kind == "client_ip":
        key = request.client_ip
    elif cluster.hash_kind == "header":
        key = request.header(cluster.hash_name)
    endpoint = cluster.balancer.pick(key)
    rewrite = ""
    if route.replace_path is not None:
        rewrite = f", path rewritten to {route.replace_path.decode()}"
    elif route.prefix_from is not None:
        rewrite = f", prefix {route.prefix_from.decode()} -> {route.prefix_to.decode() or '/'}"
    out.lines.append(f"  action   forward to upstream {cluster.key}{rewrite}")
    if endpoint is not None:
        out.lines.append(f"  endpoint {endpoint.label} (balancer picks per request)")
