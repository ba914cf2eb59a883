"""Actions and backend resolution.

``upstream: name`` names an Upstream in the owning Route's or RouteTable's namespace;
``ns/name`` another namespace, allowed when both hold:

- the Gateway admits that namespace (its own, or one its ``routeSelector`` lists), and
- the Upstream grants it: the owner's namespace is in its ``spec.allowedNamespaces`` (or that
  list holds ``"*"``), as a Gateway API ReferenceGrant would. A team cannot reach another
  team's service unless that team says so, even on a Gateway that admits every namespace.

Mirror upstreams follow the same rules. A missing or forbidden upstream invalidates the owning
resource.
"""

from __future__ import annotations

import dataclasses

from propylon.config import Forward, Rule, Upstream
from propylon.config.upstream import Dns, Endpoint
from propylon.ir import (
    Action,
    ActiveHealthIR,
    BackendIR,
    CircuitBreakerIR,
    DirectResponseIR,
    DnsIR,
    EndpointGroupIR,
    EndpointIR,
    ForwardIR,
    HashOnIR,
    MirrorIR,
    PassiveHealthIR,
    RedirectIR,
    RetryIR,
    RewriteIR,
    UpstreamIR,
    UpstreamTLSIR,
)
from propylon.translate.context import GatewayContext, RouteLike
from propylon.translate.paths import resolve_path
from propylon.translate.select import gateway_admits


def build_action(ctx: GatewayContext, owner: RouteLike, rule: Rule, field: str) -> Action | None:
    """The rule's action as IR; None for ``delegate`` (delegation is flattened elsewhere)."""
    forward = rule.forward
    if forward is not None:
        # rules that share one forward section (schema.shared_sections) in one namespace
        # share its IR, unless resolving it failed: then each owner is failed in turn
        key = (id(forward), owner.namespace)
        known = ctx.forwards.get(key)
        if known is not None and known[0] is forward:
            return known[1]
        if all(backend.unresolved for backend in forward.backends):
            return DirectResponseIR(500, "backend unresolved\n")
        made, failed = resolve_backends(ctx, owner, forward, f"{field}.forward")
        if not failed:
            ctx.forwards[key] = (forward, made)
        return made
    if rule.redirect is not None:
        r = rule.redirect
        return RedirectIR(r.status_code, r.scheme, r.host, r.port, r.path, r.prefix)
    if rule.direct_response is not None:
        return DirectResponseIR(rule.direct_response.status, rule.direct_response.body)
    return None


def resolve_backends(
    ctx: GatewayContext, owner: RouteLike, forward: Forward, field: str
) -> tuple[ForwardIR, bool]:
    """The forward section's IR, and whether a reference failed ``owner``."""
    failed = False
    backends = []
    unresolved_weight = 0
    for index, backend in enumerate(forward.backends):
        if backend.unresolved:
            unresolved_weight += backend.weight
            continue
        key = upstream_key(backend.upstream, owner.namespace)
        error = reference_error(ctx, owner, key)
        if error:
            failed = True
            ctx.fail(owner, error, field=f"{field}.backends[{index}].upstream")
        backends.append(BackendIR(key, backend.weight))
    rewrite = None
    if forward.rewrite is not None:
        rewrite = RewriteIR(prefix=forward.rewrite.prefix, full_path=forward.rewrite.full_path)
    mirror = None
    if forward.mirror is not None:
        key = upstream_key(forward.mirror.upstream, owner.namespace)
        error = reference_error(ctx, owner, key)
        if error:
            failed = True
            ctx.fail(owner, error, field=f"{field}.mirror.upstream")
        mirror = MirrorIR(key, forward.mirror.percent)
    return ForwardIR(tuple(backends), rewrite, forward.timeout, _retries(forward), mirror,
                     unresolved_weight), failed


def _retries(forward: Forward) -> RetryIR | None:
    r = forward.retries
    if r is None:
        return None
    return RetryIR(
        attempts=r.attempts,
        on=tuple(r.on),
        statuses=tuple(r.statuses),
        per_try_timeout=r.per_try_timeout,
        backoff_base=r.backoff.base_interval,
        backoff_max=r.backoff.max_interval,
        budget_percent=r.budget.percent,
        budget_min_concurrency=r.budget.min_concurrency,
    )


def upstream_key(reference: str, own_namespace: str) -> str:
    return reference if "/" in reference else f"{own_namespace}/{reference}"


def reference_error(ctx: GatewayContext, owner: RouteLike, key: str) -> str | None:
    """Why rules of ``owner`` may not forward to the Upstream ``key`` on this Gateway, or
    None; worked out once per Gateway for each namespace and key (most rules of a large
    configuration name the same few Upstreams)."""
    known, pair = ctx.references, (owner.namespace, key)
    if pair not in known:
        known[pair] = _reference_error(ctx, owner, key)
    return known[pair]


def _reference_error(ctx: GatewayContext, owner: RouteLike, key: str) -> str | None:
    namespace = key.split("/", 1)[0]
    if namespace != owner.namespace and not gateway_admits(ctx.gateway, namespace):
        return (
            f'upstream "{key}": namespace "{namespace}" is not admitted by '
            f"Gateway {ctx.gateway.key}"
        )
    upstream = ctx.inventory.upstreams.get(key)
    if upstream is None:
        return f'upstream "{key}" not found'
    if not grants(upstream, owner.namespace):
        return (
            f'upstream "{key}" does not grant references from namespace "{owner.namespace}" '
            "(the Upstream's spec.allowedNamespaces)"
        )
    return None


def grants(upstream: Upstream, namespace: str) -> bool:
    """Whether rules owned by resources in ``namespace`` may forward to ``upstream``."""
    allowed = upstream.spec.allowed_namespaces
    return namespace == upstream.namespace or "*" in allowed or namespace in allowed


def build_upstream(upstream: Upstream) -> UpstreamIR:
    spec = upstream.spec
    return UpstreamIR(
        key=upstream.key,
        endpoints=_endpoints(spec.endpoints),
        lb_policy=spec.load_balancer.policy,
        hash_on=_hash_on(upstream),
        connect_timeout=spec.connect_timeout,
        idle_timeout=spec.idle_timeout,
        max_connections_per_endpoint=spec.connection_pool.max_connections_per_endpoint,
        max_idle_per_endpoint=spec.connection_pool.max_idle_per_endpoint,
        tls=_tls(upstream),
        panic_threshold=spec.load_balancer.panic_threshold,
        active_health=_active_health(upstream),
        passive_health=(
            PassiveHealthIR(**spec.health_check.passive.model_dump())
            if spec.health_check.passive is not None else None
        ),
        circuit_breaker=(
            CircuitBreakerIR(**spec.circuit_breaker.model_dump())
            if spec.circuit_breaker is not None else None
        ),
        proxy_protocol_version=(
            spec.proxy_protocol.version if spec.proxy_protocol is not None else 0
        ),
        protocol=spec.protocol,
        dns=_dns(spec.dns),
        failover=tuple(
            EndpointGroupIR(_endpoints(group.endpoints), _group_dns(group.dns, spec.dns))
            for group in spec.failover
        ),
        failover_threshold=spec.failover_threshold,
    )


def _endpoints(endpoints: list[Endpoint]) -> tuple[EndpointIR, ...]:
    return tuple(EndpointIR(e.address, e.port, e.weight) for e in endpoints)


def _dns(dns: Dns | None) -> DnsIR | None:
    if dns is None:
        return None
    return DnsIR(dns.refresh, tuple(dns.resolvers), dns.family, dns.srv)


def _group_dns(own: Dns | None, upstream: Dns | None) -> DnsIR | None:
    """A failover group's dns: its own, else the Upstream's without ``srv`` (an SRV name
    names the Upstream's own endpoints)."""
    if own is not None:
        return _dns(own)
    inherited = _dns(upstream)
    return dataclasses.replace(inherited, srv=None) if inherited is not None else None


def _active_health(upstream: Upstream) -> ActiveHealthIR | None:
    active = upstream.spec.health_check.active
    if active is None:
        return None
    jitter = active.interval_jitter if active.interval_jitter is not None else active.interval / 10
    return ActiveHealthIR(
        type=active.type,
        path=active.path,
        service=active.service,
        host=active.host,
        expected_statuses=tuple(active.expected_statuses),
        interval=active.interval,
        interval_jitter=jitter,
        timeout=active.timeout,
        healthy_threshold=active.healthy_threshold,
        unhealthy_threshold=active.unhealthy_threshold,
    )


def _tls(upstream: Upstream) -> UpstreamTLSIR | None:
    tls = upstream.spec.tls
    if tls is None:
        return None

    def path(value: str | None) -> str | None:
        return resolve_path(value, upstream) if value is not None else None

    return UpstreamTLSIR(tls.sni, path(tls.ca_file), path(tls.cert_file), path(tls.key_file))


def _hash_on(upstream: Upstream) -> HashOnIR | None:
    hash_on = upstream.spec.load_balancer.hash_on
    if hash_on is None:
        return None
    if hash_on.header is not None:
        return HashOnIR("header", hash_on.header)
    if hash_on.cookie is not None:
        return HashOnIR("cookie", hash_on.cookie)
    return HashOnIR("client_ip")
