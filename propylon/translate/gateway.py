"""One Gateway's IR: the ordered steps of its translation.

1. ``select_routes``: the Routes its routeSelector admits (key order);
2. ``flatten_route`` / ``resolve_delegation``: every rule as a draft, delegation followed,
   matches checked (regexes, nesting) and backends resolved, problems reported;
3. ``build_rules``: drafts of Invalid resources replaced, policies attached to the others;
4. ``report_shadowed``: a warning for each rule that other rules fully shadow;
5. the upstreams the served rules use, the listeners and the Gateway-wide settings.

Routes and RouteTables that containment replaces (``replaced``) are Invalid on every Gateway
from step 1. A Gateway that containment disables (``disabled``, the reason) keeps only its
listeners, answering every request with 503 (``translate_disabled_gateway``).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence

from propylon.config import Gateway, Route, RouteTable
from propylon.config.gateway import Certificate, ListenerTLS
from propylon.ir import (
    CertificateIR,
    ForwardIR,
    GatewayIR,
    ListenerIR,
    ListenerLimitsIR,
    ListenerSectionIR,
    ListenerTLSIR,
    PathNormalizationIR,
    PolicyIR,
    ProxyProtocolIR,
    RuleIR,
    TracingIR,
    UpstreamIR,
)
from propylon.translate.backends import build_upstream
from propylon.translate.consumers import secret_reads_made
from propylon.translate.containment import disabled_gateway
from propylon.translate.context import GatewayContext
from propylon.translate.delegation import Draft, flatten_route
from propylon.translate.inventory import Inventory
from propylon.translate.memo import (
    Recording,
    RouteEntry,
    RouteMemo,
    StepRecorder,
    gateway_view,
    route_memo,
)
from propylon.translate.paths import resolve_path
from propylon.translate.policies import PolicyTargets, attach_policies, gateway_level
from propylon.translate.replace import build_rules, invalid_route_response
from propylon.translate.select import select_routes
from propylon.translate.shadows import report_shadowed
from propylon.translate.status import StatusBook


def translate_gateway(
    gateway: Gateway,
    inventory: Inventory,
    targets: PolicyTargets,
    status: StatusBook,
    replaced: frozenset[str] = frozenset(),
    disabled: str | None = None,
    routes: Container[str] | None = None,
) -> GatewayIR:
    """``routes``: the keys of the only Routes translated (None: all it selects)."""
    if disabled is not None:
        return translate_disabled_gateway(gateway, inventory, status, routes)
    ctx = GatewayContext(gateway, inventory, status, set(replaced))
    if gateway.sections is not None:
        key = gateway.key
        ctx.scopes = {route.ref: served for route in inventory.routes
                      if (served := route.served_on(key))}
    status.selected(gateway.kind, gateway.key, gateway.key)
    with route_memo(gateway.key) as memo:
        built, defaults = _translate_routes(ctx, targets, replaced, memo, routes)
    report_shadowed(ctx, built)
    rules = [rule for _, rule in built]
    upstreams = collect_upstreams(rules, inventory)
    for upstream in upstreams:
        status.selected("Upstream", upstream.key, gateway.key)
    return GatewayIR(
        key=gateway.key,
        listeners=translate_listeners(gateway),
        rules=tuple(rules),
        upstreams=upstreams,
        trusted_proxies=tuple(gateway.spec.trusted_proxies),
        invalid_route_response=invalid_route_response(ctx),
        default_policies=defaults,
        tracing=translate_tracing(gateway),
    )


def _translate_routes(
    ctx: GatewayContext, targets: PolicyTargets, replaced: frozenset[str],
    memo: RouteMemo | None, routes: Container[str] | None = None,
) -> tuple[list[tuple[Draft, RuleIR]], tuple[PolicyIR, ...]]:
    """Steps 2 and 3 for every selected Route, reusing what ``memo`` kept of the Routes
    unchanged since the last translation (``memo.py``), in the same order; the rules and the
    Gateway's default policies."""
    gateway, inventory = ctx.gateway, ctx.inventory
    reads = secret_reads_made()
    gateway_policies = gateway_level(gateway, targets)
    enforced = [c for c in gateway_policies if c.enforced]  # all the rules read of them
    if memo is not None and secret_reads_made() != reads:
        memo.forget()  # the Gateway's own policies read a secret: it may have changed
        memo = None
    if memo is not None:
        # which types they take, and the sources Policies overridden are told of: not specs
        taken = [(c.type, c.source, c.policy) for c in enforced]
        memo.start(gateway_view(gateway, taken), inventory, replaced, targets)
    steps: list[tuple[Route, Sequence[Draft], Recording | None, RouteEntry | None,
                      tuple[RouteTable, ...]]] = []
    for route in selected_routes(gateway, inventory, routes):
        entry = memo.get(route) if memo is not None else None
        if entry is not None:
            entry.flattened.replay(ctx)
            steps.append((route, entry.drafts, entry.flattened, entry, entry.tables))
            continue
        ctx.tables_read = []
        with StepRecorder(ctx, secret_reads_made) as flattened:
            drafts = flatten_route(ctx, route)
        steps.append((route, drafts, flattened[0], None, tuple(ctx.tables_read)))
        ctx.tables_read = None
    defaults = attach_policies([gateway_policies], ctx.status, gateway.key)
    built: list[tuple[Draft, RuleIR]] = []
    for route, route_drafts, flattened_once, entry, tables in steps:
        if entry is not None and memo is not None:
            if entry.built.calls or entry.built.invalid:
                entry.built.replay(ctx)
            built += entry.rules
            continue
        with StepRecorder(ctx, secret_reads_made) as made:
            rules = build_rules(ctx, route_drafts, enforced, targets)
        built += rules
        if memo is not None and flattened_once and made[0]:
            memo.keep(RouteEntry(route, flattened_once,
                                 tuple(route_drafts), made[0], tuple(rules), tables))
    if memo is not None:
        memo.finish()
    return built, defaults


def selected_routes(
    gateway: Gateway, inventory: Inventory, routes: Container[str] | None
) -> list[Route]:
    """The Routes ``gateway`` selects, in key order; only those of ``routes`` if given."""
    selected = select_routes(gateway, inventory.routes, inventory.routes_by_namespace)
    return selected if routes is None else [r for r in selected if r.key in routes]


def translate_disabled_gateway(
    gateway: Gateway, inventory: Inventory, status: StatusBook,
    routes: Container[str] | None = None,
) -> GatewayIR:
    """Fail closed: the listeners, and one rule answering 503 to every request. The Routes it
    selects are told why it does not serve them."""
    status.selected(gateway.kind, gateway.key, gateway.key)
    for route in selected_routes(gateway, inventory, routes):
        status.selected(route.kind, route.key, gateway.key)
        status.note(route.kind, route.key,
                    f"not served by Gateway {gateway.key}: it is disabled (see its status)")
    return disabled_gateway(gateway.key, translate_listeners(gateway))


def translate_tracing(gateway: Gateway) -> TracingIR | None:
    tracing = gateway.spec.tracing
    if tracing is None:
        return None
    return TracingIR(tracing.otlp_endpoint, tracing.sampling, tracing.service_name)


def translate_listeners(gateway: Gateway) -> tuple[ListenerIR, ...]:
    sections = gateway.sections.listeners if gateway.sections is not None else {}
    return tuple(
        ListenerIR(
            lst.name, lst.port, lst.protocol, lst.address, tuple(lst.hostnames),
            ListenerLimitsIR(**lst.limits.model_dump()),
            translate_listener_tls(lst.tls, gateway) if lst.tls is not None else None,
            PathNormalizationIR(**lst.path_normalization.model_dump()),
            ProxyProtocolIR(
                lst.proxy_protocol.mode,
                tuple(lst.proxy_protocol.versions),
                tuple(lst.proxy_protocol.trusted_sources),
            ),
            lst.http2,
            tuple(ListenerSectionIR(name, hostname)
                  for name, hostname in sections.get(lst.name, ())),
        )
        for lst in gateway.spec.listeners
    )


def translate_listener_tls(tls: ListenerTLS, gateway: Gateway) -> ListenerTLSIR:
    certificates = tuple(translate_certificate(c, gateway) for c in tls.certificates)
    validation = tls.client_validation
    if validation is None:
        return ListenerTLSIR(certificates)
    return ListenerTLSIR(certificates, resolve_path(validation.ca_file, gateway), validation.mode)


def translate_certificate(certificate: Certificate, gateway: Gateway) -> CertificateIR:
    inline = certificate.inline  # from a Kubernetes Secret: the PEM travels in the IR
    if inline is not None:
        return CertificateIR("", "", inline.certificate_pem, inline.private_key, inline.source)
    return CertificateIR(resolve_path(certificate.cert_file, gateway),
                         resolve_path(certificate.key_file, gateway))


def collect_upstreams(rules: Iterable[RuleIR], inventory: Inventory) -> tuple[UpstreamIR, ...]:
    """The Upstreams the served rules forward to, in key order."""
    forwards = [rule.action for rule in rules if isinstance(rule.action, ForwardIR)]
    keys = {backend.upstream for forward in forwards for backend in forward.backends}
    keys |= {forward.mirror.upstream for forward in forwards if forward.mirror is not None}
    return build_upstreams(keys, inventory)


def build_upstreams(keys: Iterable[str], inventory: Inventory) -> tuple[UpstreamIR, ...]:
    """The Upstreams of ``keys``, in key order."""
    return tuple(build_upstream(inventory.upstreams[key]) for key in sorted(keys))
