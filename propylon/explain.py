"""``propylon explain``: what a request would get, and why, without sending it.

The request arrives on one port: the URL's (or the Host header's), else the one ``listener``
names. A URL without a port arrives on the scheme's default port when a Gateway listens there,
else on the only listener of the scheme's protocol; with several, the caller must choose
(``ListenerChoiceError``).

The path is routed as the gateway routes it: normalised first with the listener's
``pathNormalization`` (``proxy/path.py``, the one implementation); a path the listener refuses
is reported as the 400 it gets, and nothing is routed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, urlsplit

from propylon import ir
from propylon.policies.plugins import policy_types
from propylon.proxy.hostport import split_host
from propylon.proxy.path import PathError, normalize_path
from propylon.proxy.rewrite import redirect_location
from propylon.runtime.compile import Services, compile_gateway, listener_runtimes
from propylon.runtime.compiled import FORWARD, REDIRECT, Cluster, CompiledRoute


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


class ListenerChoiceError(ValueError):
    """Which listener the request arrives on cannot be decided from the URL and ``listener``."""


@dataclass(frozen=True, slots=True)
class _Imagined:
    """The request as the proxy would see it."""

    method: str
    host_field: str  # the Host header, as sent
    host: str  # without its port
    path: str  # as sent; as the router sees it once the listener has normalised it
    query: str
    view: _Request
    fragment: bool = False  # the URL has one: the gateway refuses such a request target


def explain(
    snapshot: ir.SnapshotIR,
    method: str,
    url: str,
    headers: dict[str, str],
    client_ip: str = "127.0.0.1",
    listener: str | None = None,
) -> Explanation:
    """``listener`` (a port, a listener name, or ``NAMESPACE/GATEWAY/NAME``) says where the
    request arrives; by default the URL's port decides (see the module's docstring)."""
    parts = urlsplit(url)
    host_field = headers.get("host") or parts.netloc
    host, host_port = split_host(host_field.encode("latin-1"))
    port = arrival_port(snapshot, parts.scheme, host_port or parts.port, listener)
    request = _Imagined(method.upper(), host_field, host, parts.path or "/", parts.query,
                        _Request({**headers, "host": host_field}, parts.query, client_ip),
                        fragment="#" in url)
    out = Explanation()
    candidates = [
        (g, lis) for g, lis in _listeners(snapshot) if lis.port == port
    ]
    if not candidates:
        out.lines.append(f"no Gateway listens on port {port} (listeners: "
                         f"{_describe(_listeners(snapshot))})")
        return out
    loop = asyncio.new_event_loop()
    try:
        for gateway, arrival in candidates:
            _explain_gateway(out, gateway, arrival, loop, request)
    finally:
        loop.close()
    return out


def arrival_port(
    snapshot: ir.SnapshotIR, scheme: str, explicit_port: int | None, listener: str | None
) -> int:
    """The port the request arrives on; ``ListenerChoiceError`` when that is not clear."""
    if listener is not None:
        return _chosen_listener_port(snapshot, listener)
    if explicit_port is not None:
        return explicit_port
    pairs = _listeners(snapshot)
    default = 443 if scheme == "https" else 80
    if any(lis.port == default for _, lis in pairs):
        return default
    protocol = "HTTPS" if scheme == "https" else "HTTP"
    fitting = [(g, lis) for g, lis in pairs if lis.protocol == protocol]
    if len({lis.port for _, lis in fitting}) == 1:
        return fitting[0][1].port
    raise ListenerChoiceError(
        f"the URL has no port and no Gateway listens on {default}; "
        + (f"{protocol} listeners: {_describe(fitting)}" if fitting
           else f"no {protocol} listener among {_describe(pairs)}")
        + "; choose one with --listener (a port, a name or NAMESPACE/GATEWAY/NAME)"
    )


def _chosen_listener_port(snapshot: ir.SnapshotIR, choice: str) -> int:
    pairs = _listeners(snapshot)
    if choice.isdigit():
        found = {lis.port for _, lis in pairs if lis.port == int(choice)}
    else:
        gateway_key, _, name = choice.rpartition("/")
        found = {lis.port for g, lis in pairs
                 if lis.name == name and gateway_key in ("", g.key)}
    if len(found) == 1:
        return found.pop()
    problem = "names several ports" if found else "names no listener"
    raise ListenerChoiceError(f"--listener {choice} {problem}; listeners: {_describe(pairs)}")


def _listeners(snapshot: ir.SnapshotIR) -> list[tuple[ir.GatewayIR, ir.ListenerIR]]:
    return [(g, lis) for g in snapshot.gateways for lis in g.listeners]


def _describe(pairs: list[tuple[ir.GatewayIR, ir.ListenerIR]]) -> str:
    return ", ".join(f"{g.key}/{lis.name} :{lis.port} {lis.protocol}" for g, lis in pairs) \
        or "none"


def _explain_gateway(
    out: Explanation,
    gateway: ir.GatewayIR,
    listener: ir.ListenerIR,
    loop: asyncio.AbstractEventLoop,
    request: _Imagined,
) -> None:
    services = Services.scratch(loop)
    runtime = compile_gateway(gateway, services)
    runtime = listener_runtimes(gateway, runtime, services).get(listener.name, runtime)
    out.lines.append(f"Gateway {gateway.key} (listener {listener.name}, port {listener.port})")
    out.lines.append(f"  client   {_client_protocols(listener)}")
    try:
        path = listener_path(request, listener.path_normalization)
    except PathError as exc:
        out.lines.append(f"  rejected 400: {exc} (nothing is routed)")
        return
    if path != request.path:
        out.lines.append(f"  path     normalised to {path} (routed and forwarded as such)")
        request = replace(request, path=path)
    route = runtime.router.match(request.host, request.method, request.path, request.view)
    if route is None:
        out.lines.append(f"  no rule matches host {request.host!r}, {request.method} "
                         f"{request.path}: 404")
        _policies(out, gateway.default_policies, "  Gateway policies on the 404")
        return
    out.matched = True
    rule = next(r for r in gateway.rules if r.id == route.rule_id)
    out.lines.append(f"  rule     {rule.id} ({rule.route}, rule {route.rule_label})")
    if rule.delegated_from:
        out.lines.append(f"  via      {' -> '.join(rule.delegated_from)}")
    if rule.replaced:
        out.lines.append("  INVALID  the resource is invalid: the rule answers the fixed error")
    _policies(out, ir.effective_policies(gateway.default_policies, rule.policies,
                                         policy_types().rank), "  policies (in order)")
    if route.kind == REDIRECT:
        out.lines.append(f"  action   {_redirect(route, listener, request)}")
    elif route.kind == FORWARD:
        assert isinstance(rule.action, ir.ForwardIR)
        _forward(out, rule.action, route, runtime.clusters, request.view)
        upstreams = {u.key: u for u in gateway.upstreams}
        for key in dict.fromkeys(b.upstream for b in rule.action.backends):
            if key in upstreams:
                out.lines.append(
                    f"  upstream {key} spoken to in {_upstream_protocol(upstreams[key])}")
    else:
        out.lines.append(f"  action   direct response {route.direct_status}")


def _client_protocols(listener: ir.ListenerIR) -> str:
    if not listener.http2:
        return "HTTP/1.1 only (http2: false)"
    if listener.protocol == "HTTPS":
        return "HTTP/2 or HTTP/1.1, as the client's TLS ALPN chooses (h2 offered first)"
    return "HTTP/1.1, or HTTP/2 when the client opens with the h2c preface (prior knowledge)"


def _upstream_protocol(upstream: ir.UpstreamIR) -> str:
    if upstream.protocol == "HTTP2":
        return "HTTP/2 (h2 over TLS, ALPN)" if upstream.tls is not None else \
            "HTTP/2 (h2c, prior knowledge)"
    return "HTTP/1.1" + (" over TLS" if upstream.tls is not None else "")


def listener_path(request: _Imagined, options: ir.PathNormalizationIR) -> str:
    """The path the listener routes (``request.path`` normalised as the proxy does it), or
    ``PathError`` for a request target it answers 400."""
    if request.fragment:
        raise PathError("a fragment in the request target")
    if any(not 0x21 <= ord(char) <= 0x7E for char in request.path):
        # the HTTP/1.1 parser's strict grammar, before any normalisation
        raise PathError("a space, control or non-ASCII character in the request target")
    if not options.enabled:
        return request.path
    return normalize_path(request.path.encode("ascii"), options).decode("ascii")


def _policies(out: Explanation, policies: tuple[ir.PolicyIR, ...], title: str) -> None:
    if not policies:
        out.lines.append(f"{title}: none")
        return
    out.lines.append(f"{title}:")
    for i, policy in enumerate(policies, 1):
        out.lines.append(f"    {i}. {policy.type}  from {policy.source}")


def _redirect(route: CompiledRoute, listener: ir.ListenerIR, request: _Imagined) -> str:
    assert route.redirect is not None
    location = redirect_location(
        route.redirect, listener.protocol.lower(), request.host_field.encode("latin-1"),
        request.host, request.path.encode("latin-1"), request.query.encode("latin-1"))
    return f"redirect {route.redirect.status_code} to {location}"


def _forward(
    out: Explanation,
    forward: ir.ForwardIR,
    route: CompiledRoute,
    clusters: Mapping[str, Cluster],
    request: _Request,
) -> None:
    total = sum(b.weight for b in forward.backends)
    if total == 0:
        out.lines.append("  action   forward, but every backend has weight 0: 503")
        return
    if len(forward.backends) == 1:
        cluster = clusters[forward.backends[0].upstream]
        out.lines.append(f"  action   forward to upstream {cluster.key}{_rewrite(route)}")
        out.lines.append(f"  endpoint {_endpoint(cluster, request)} (balancer picks per request)")
        return
    out.lines.append(f"  action   forward, split by weight{_rewrite(route)}:")
    for backend in forward.backends:
        cluster = clusters[backend.upstream]
        share = f"{100 * backend.weight / total:.4g}%"
        out.lines.append(f"    upstream {cluster.key}  weight {backend.weight} ({share})  "
                         f"endpoint {_endpoint(cluster, request)}")
    out.lines.append("  (the split is per request; so is each upstream's endpoint)")


def _rewrite(route: CompiledRoute) -> str:
    if route.replace_path is not None:
        return f", path rewritten to {route.replace_path.decode()}"
    if route.prefix_from is not None:
        return f", prefix {route.prefix_from.decode()} -> {route.prefix_to.decode() or '/'}"
    return ""


def _endpoint(cluster: Cluster, request: _Request) -> str:
    key = None
    if cluster.hash_kind == "client_ip":
        key = request.client_ip
    elif cluster.hash_kind == "header":
        key = request.header(cluster.hash_name)
    endpoint = cluster.balancer.pick(key)
    return endpoint.label if endpoint is not None else "none usable"
