"""IR -> compiled runtime, once per configuration version (never on the request path)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import itertools
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from propylon.filters._common import ConsumerDirectory
from propylon.filters.base import Filter, FilterEnv
from propylon.filters.factory import build_filter, filter_maker
from propylon.ir import (
    Action,
    DirectResponseIR,
    ForwardIR,
    GatewayIR,
    ListenerIR,
    ListenerSectionIR,
    PolicyIR,
    RedirectIR,
    RuleIR,
    SnapshotIR,
    TracingIR,
    UpstreamIR,
)
from propylon.observability.metrics import MetricsRegistry, RouteStats
from propylon.policies.plugins import policy_types
from propylon.runtime import discovery
from propylon.runtime.balancer import WeightedChoice, make_balancer
from propylon.runtime.chain_memo import ChainHead, ChainMemo
from propylon.runtime.check_memo import ProvenRules, changed_span, vouched
from propylon.runtime.compiled import (
    DIRECT,
    EMPTY_CHAIN,
    FORWARD,
    REDIRECT,
    Cluster,
    ClusterEndpoint,
    CompiledRoute,
    FilterChain,
    GatewayRuntime,
    HostSet,
    Runtime,
)
from propylon.runtime.gc_pause import gc_paused
from propylon.runtime.health import EjectionPolicy, HealthRegistry
from propylon.runtime.pools import EndpointPool, PoolFactory, ScratchPools
from propylon.runtime.retry import RetryPolicy
from propylon.runtime.route_memo import ClusterMemo, Placed, RouteMemo
from propylon.runtime.router import Router, RouterEntry, sectioned

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from propylon.ir import CircuitBreakerIR
    from propylon.observability.tracing_export import SpanSink, TracerPipelines, TracingSettings
    from propylon.runtime.balancer import Balancer


class CompileError(ValueError):
    """The snapshot cannot run here (e.g. two Gateways on one port); the old one stays."""


@dataclass
class Services:
    """What a worker keeps across configuration versions and lends to each compilation:
    connection pools (the data plane's, through ``PoolFactory``), metrics counters, shared
    filter objects, endpoint health and span exporters."""

    pools: PoolFactory
    metrics: MetricsRegistry = field(default_factory=MetricsRegistry)
    env: FilterEnv | None = None
    health: HealthRegistry = field(default_factory=HealthRegistry)
    # span exporters, made when a Gateway first asks for tracing (the SDK loads only then)
    tracing: TracerPipelines | None = None
    export_traces: bool = True
    # each Gateway's tracing filter (stateless), by Gateway: a new one for the same settings
    # would be a new first filter of every chain, none of them reused
    tracing_filters: dict[str, tuple[TracingSettings, SpanSink, Filter]] = field(
        default_factory=dict)
    # the chains of the last compilation, reused for unchanged rules (chain_memo.py)
    chains: ChainMemo = field(default_factory=ChainMemo)
    # the DNS answers the supervisor's resolver sent (runtime/discovery.py)
    answers: dict[discovery.DnsQuery, discovery.Answer] = field(default_factory=dict)
    # a check's rules known to compile (check_memo.py); None: compile every rule (workers)
    proven: ProvenRules | None = None
    # a check made once (``propylon validate``): nothing is kept for a next compilation, so
    # each rule is compiled without the memos' bookkeeping and without statistics of its own
    once: bool = False
    # the clusters and compiled routes of the last compilation, for what is unchanged
    clusters: ClusterMemo = field(default_factory=ClusterMemo)
    routes: RouteMemo = field(default_factory=RouteMemo)

    @classmethod
    def scratch(cls, loop: asyncio.AbstractEventLoop) -> Services:
        """Throw-away services, to check that a snapshot compiles or to explain it."""
        return cls(ScratchPools(loop), export_traces=False)


def compile_snapshot(snapshot: SnapshotIR, services: Services) -> Runtime:
    """The runtime of ``snapshot``; what its compilation keeps for the next one (memos, the
    consumers the auth filters read: ``ConsumerDirectory``) is committed with it, as the
    caller swaps it in without yielding to requests between."""
    with compiling(snapshot, services) as runtime:
        return runtime


@contextlib.contextmanager
def compiling(snapshot: SnapshotIR, services: Services) -> Iterator[Runtime]:
    """``compile_snapshot`` for a caller with more to do before it swaps the runtime in (open
    listeners, load certificates): what the compilation keeps is committed when the block
    ends, with what it changes in place in the objects the serving runtime shares with it
    (kept clusters' endpoints and settings, kept routes' chains: ``route_memo.py``), and
    undone if the block raises, so the runtime serving until then is left as it was."""
    with gc_paused():
        if services.env is None:  # one for the services' life: the filters its memos keep
            services.env = FilterEnv(services.pools.loop)  # read its shared objects
        env = services.env.for_snapshot(snapshot)
        consumers = ConsumerDirectory.of(env)
        services.chains.begin(snapshot.consumers)
        services.clusters.begin()
        services.routes.begin()
        if services.proven is not None:
            services.proven.begin(snapshot.consumers)
        try:
            runtime = _compile_snapshot(snapshot, services, env)
        except BaseException:
            _abort(services, consumers)
            raise
    try:
        yield runtime
    except BaseException:
        _abort(services, consumers)
        raise
    services.chains.commit()
    services.clusters.commit()
    services.routes.commit()
    if services.proven is not None:
        services.proven.commit()
    consumers.commit()


def _abort(services: Services, consumers: ConsumerDirectory) -> None:
    services.chains.abort()
    services.clusters.abort()
    services.routes.abort()
    if services.proven is not None:
        services.proven.abort()
    consumers.abort()


def _compile_snapshot(snapshot: SnapshotIR, services: Services, env: FilterEnv) -> Runtime:
    gateways: dict[str, GatewayRuntime] = {}
    listeners: dict[tuple[str, int], GatewayRuntime] = {}
    hosts: dict[tuple[str, int], HostSet | None] = {}
    specs: dict[tuple[str, int], ListenerIR] = {}
    for gateway in snapshot.gateways:
        runtime = compile_gateway(gateway, services, env)
        gateways[gateway.key] = runtime
        serving = listener_runtimes(gateway, runtime, services)
        for listener in gateway.listeners:
            key = (listener.address, listener.port)
            if key in listeners:
                raise CompileError(
                    f"listener {listener.address}:{listener.port} of Gateway {gateway.key} is "
                    f"already used by Gateway {listeners[key].key}"
                )
            listeners[key] = serving.get(listener.name, runtime)
            hosts[key] = HostSet(listener.hostnames) if listener.hostnames else None
            specs[key] = listener
    return Runtime(snapshot.version, gateways, listeners, hosts, specs)


# Router entries' orders are spaced this far apart in config order, so that the entries of
# rules a change adds between two others get orders between theirs (``_spread_orders``).
ORDER_GAP = 1 << 32


def compile_gateway(
    gateway: GatewayIR, services: Services, env: FilterEnv | None = None
) -> GatewayRuntime:
    env = env or FilterEnv(services.pools.loop)
    metrics = services.metrics
    clusters = {up.key: kept_cluster(gateway.key, up, services) for up in gateway.upstreams}
    routes, chains = services.routes, services.chains
    routes.gateway(gateway.key, clusters)
    tracing = compile_tracing(gateway.key, gateway.tracing, services)
    last_head = chains.heads.get(gateway.key)
    head = chains.gateway(gateway.key, tracing, gateway.default_policies)
    defaults = DefaultFilters.of(head, env, renewed=head is not last_head)
    proven = services.proven
    if services.once:
        router = _check_rules_once(gateway, defaults, clusters, services, env)
    elif proven is not None:
        router = _check_rules(gateway, proven, defaults, clusters, services, env)
    else:
        router = (_compile_changed_rules(gateway, defaults, clusters, services, env)
                  or _compile_rules(gateway, defaults, clusters, services, env))
    not_found = CompiledRoute("", "none", "none", metrics.route(gateway.key, "none", "none"))
    not_found.direct_status, not_found.direct_body = 404, b"no route matched\n"
    not_found.chain = compile_rule_chain((), env, defaults)[0]  # the Gateway's policies
    trusted = tuple(ipaddress.ip_network(c, strict=False) for c in gateway.trusted_proxies)
    return GatewayRuntime(gateway.key, router, clusters, trusted, not_found)


def listener_runtimes(gateway: GatewayIR, runtime: GatewayRuntime, services: Services
                      ) -> dict[str, GatewayRuntime]:
    """The runtimes of ``gateway``'s listeners that do not serve every rule of ``runtime``,
    by listener name: on a Gateway whose listeners have sections (some rule is served on
    some of them only, ``RuleIR.sections``: a Gateway API route bound by ``sectionName`` or
    ``port``), each listener gets a router of its own, over one router per section of the
    rules served there, the section chosen by the request's host (``router.sectioned``);
    the rules' compiled routes, clusters and 404 are ``runtime``'s. Empty on other Gateways
    (the listeners are looked at, not the rules: a change at 10,000 Routes compiles in a
    few milliseconds), and for a check (``services.proven``), which only needs the
    Gateway's router to build: the listeners' hold some of its entries."""
    if not any(listener.sections for listener in gateway.listeners):
        return {}
    placed = services.routes.placed_now(gateway.key)
    if placed is None:
        return {}
    rules = list(zip(placed.rules, placed.entries, strict=True))
    made = {}
    for listener in gateway.listeners:
        routers = [
            (section.hostname, services.routes.section_router(
                (gateway.key, listener.name, section.name), rules))
            for section in listener.sections or (ListenerSectionIR(listener.name),)]
        made[listener.name] = GatewayRuntime(runtime.key, sectioned(routers), runtime.clusters,
                                             runtime.trusted_networks, runtime.not_found)
    return made


def _compile_rules(
    gateway: GatewayIR, defaults: DefaultFilters, clusters: dict[str, Cluster],
    services: Services, env: FilterEnv,
) -> Router[CompiledRoute]:
    """Every rule of ``gateway`` (those compiled before, unchanged, keep what they made) and
    the router over them."""
    placed: list[tuple[RouterEntry[CompiledRoute], ...]] = []
    order = 0
    for rule in gateway.rules:
        made = _compile_rule(gateway.key, rule, defaults, clusters, services, env)
        entries = _rule_entries(rule, made, order, ORDER_GAP)
        placed.append(entries)
        order += len(entries) * ORDER_GAP
    return services.routes.router(gateway.key, itertools.chain.from_iterable(placed),
                                  Placed(gateway.rules, placed, defaults.head, 0))


def _compile_changed_rules(
    gateway: GatewayIR, defaults: DefaultFilters, clusters: dict[str, Cluster],
    services: Services, env: FilterEnv,
) -> Router[CompiledRoute] | None:
    """The router of ``gateway`` when most of its rules are, at the same place, the very
    objects last compiled with the same clusters and chains: only the rules between them are
    compiled and their entries replaced in the last router (a change of one Route among
    10,000 costs what one Route costs). When the chains' head changed (the Gateway's tracing
    or default policies), or chains are to be made again because the Consumers changed
    (``ChainMemo.stale``), the others keep their routes and entries too, each given its new
    chain (``_rechain``). None when it cannot: compile them all."""
    routes, chains = services.routes, services.chains
    last = routes.last_placed(gateway.key)
    if last is None or not routes.same_clusters:
        return None
    start, old_stop, new_stop = changed_span(gateway.rules, last.rules)
    replaced = last.replaced + (old_stop - start)
    if replaced > len(gateway.rules) // 4 + 16:
        return None  # compiled whole now and then: what the replaced rules kept is let go
    new_rules = gateway.rules[start:new_stop]
    orders = _spread_orders(last.entries, start, old_stop,
                            sum(len(rule.matches) for rule in new_rules))
    if orders is None:
        return None
    old_rules = last.rules[start:old_stop]
    routes.carry(old_rules)
    chains.carry()
    if last.head is not defaults.head or chains.stale_in(last.rules):
        _rechain(last, start, old_stop, defaults, services, env)
    lowest, gap = orders
    added: list[tuple[RouterEntry[CompiledRoute], ...]] = []
    for rule in new_rules:
        made = _compile_rule(gateway.key, rule, defaults, clusters, services, env)
        entries = _rule_entries(rule, made, lowest, gap)
        added.append(entries)
        lowest += len(entries) * gap
    gone = list(zip(old_rules, last.entries[start:old_stop], strict=True))
    placed = Placed(gateway.rules, [*last.entries[:start], *added, *last.entries[old_stop:]],
                    defaults.head, replaced)
    return routes.changed_router(gateway.key, gone, list(zip(new_rules, added, strict=True)),
                                 placed)


def _rechain(last: Placed, start: int, stop: int, defaults: DefaultFilters, services: Services,
             env: FilterEnv) -> None:
    """Each rule of ``last`` around ``last.rules[start:stop]`` (carried over by position)
    keeps its compiled routes, which take the rule's chain after the new head at commit when
    it is another (a rule with its own policy of each type whose default changed keeps its
    chain: ``ChainHead.keeps``)."""
    routes, chains = services.routes, services.chains
    for index in itertools.chain(range(start), range(stop, len(last.rules))):
        entries = last.entries[index]
        if not entries:
            continue
        rule = last.rules[index]
        chain = _rule_chain(rule, defaults, chains, env)
        if chain is not entries[0].payload.chain:
            routes.rechain(rule, tuple([entry.payload for entry in entries]), chain)


def _spread_orders(entries: list[tuple[RouterEntry[CompiledRoute], ...]], start: int,
                   stop: int, count: int) -> tuple[int, int] | None:
    """The first order and the step for ``count`` entries replacing ``entries[start:stop]``
    between the orders of the entries around them, or None if there is no room left (the
    same place changed some thirty times: the Gateway is compiled whole, orders spaced
    again)."""
    below = next((entries[i][-1].order for i in range(start - 1, -1, -1) if entries[i]), None)
    above = next((entries[i][0].order for i in range(stop, len(entries)) if entries[i]), None)
    if below is None:
        return (0 if above is None else above - count * ORDER_GAP), ORDER_GAP
    if above is None:
        return below + ORDER_GAP, ORDER_GAP
    gap = (above - below) // (count + 1)
    return (below + gap, gap) if gap >= 1 else None


def _check_rules(
    gateway: GatewayIR, proven: ProvenRules, defaults: DefaultFilters,
    clusters: dict[str, Cluster], services: Services, env: FilterEnv,
) -> Router[CompiledRoute]:
    """A check of ``gateway``'s rules: those not proven before are compiled (the rest are
    skipped without a look when the change is a span of them) and put in a router, which
    only has to build."""
    span = proven.gateway(gateway)
    rules = gateway.rules if span is None else gateway.rules[span[0]:span[2]]
    routes, chains = services.routes, services.chains
    entries: list[RouterEntry[CompiledRoute]] = []
    for rule in rules:
        known = proven.known(rule)
        proven.add(rule)
        if known:
            continue
        made = routes.unchanged(rule, defaults.head, chains)
        if made is None:
            chain = _checked_chain(rule, defaults, chains, env)
            made = _rule_routes(gateway.key, rule, chain, clusters, services)
        entries += _rule_entries(rule, made, len(entries), 1)
    return services.routes.router(gateway.key, entries)


def _check_rules_once(
    gateway: GatewayIR, defaults: DefaultFilters, clusters: dict[str, Cluster],
    services: Services, env: FilterEnv,
) -> Router[CompiledRoute]:
    """A check of every rule of ``gateway`` that nothing comes after: each rule's routes
    compiled as a worker compiles them (its chain built unless translation built its
    policies just before, ``check_memo.vouched``) and the router built over them; what a
    worker keeps for its next version (route memo, statistics series) is left out."""
    chains = services.chains
    stats = services.metrics.route(gateway.key, "check", "check")
    entries: list[RouterEntry[CompiledRoute]] = []
    for rule in gateway.rules:
        made = _compiled_routes(rule, _checked_chain(rule, defaults, chains, env), clusters,
                                "", "", stats)
        entries += _rule_entries(rule, made, len(entries), 1)
    return Router(entries)


def _compile_rule(
    gateway: str, rule: RuleIR, defaults: DefaultFilters, clusters: dict[str, Cluster],
    services: Services, env: FilterEnv,
) -> tuple[CompiledRoute, ...]:
    """The compiled routes of ``rule`` (one per match): those of the last compilation when
    it is the rule compiled then, with the same chain and clusters."""
    routes, chains = services.routes, services.chains
    if not defaults.renewed:  # a chain made after another head is never kept whole
        kept = routes.unchanged(rule, defaults.head, chains)
        if kept is not None:
            return kept
    return _rule_routes(gateway, rule, _rule_chain(rule, defaults, chains, env), clusters,
                        services)


def _rule_chain(rule: RuleIR, defaults: DefaultFilters, chains: ChainMemo, env: FilterEnv
                ) -> FilterChain:
    """The filter chain of ``rule`` (after its head: the Gateway's tracing, and its default
    policies where the rule has none of a type), kept in ``chains``."""
    return chains.chain(rule, defaults.head, functools.partial(
        compile_rule_chain, rule.policies, env, defaults))


def _checked_chain(rule: RuleIR, defaults: DefaultFilters, chains: ChainMemo, env: FilterEnv
                   ) -> FilterChain:
    """``_rule_chain`` for a check: none when translation built the rule's policies just
    before (``check_memo.vouched``), as a check needs only to know they build (the
    Gateway's default policies are built for its 404)."""
    if defaults.head.tracing is None and vouched(rule.policies):
        return EMPTY_CHAIN
    return _rule_chain(rule, defaults, chains, env)


def _rule_routes(
    gateway: str, rule: RuleIR, chain: FilterChain, clusters: dict[str, Cluster],
    services: Services,
) -> tuple[CompiledRoute, ...]:
    """The compiled routes of ``rule`` (one per match): the routes of the last compilation
    when nothing they were made from changed (``route_memo.py``)."""
    routes = services.routes.get(rule, chain, clusters)
    if routes is None:
        route_label, rule_label = rule_labels(rule)
        stats = services.metrics.route(gateway, route_label, rule_label)
        routes = _compiled_routes(rule, chain, clusters, route_label, rule_label, stats)
        services.routes.add(rule, chain, clusters, routes)
    return routes


def _compiled_routes(
    rule: RuleIR, chain: FilterChain, clusters: dict[str, Cluster], route_label: str,
    rule_label: str, stats: RouteStats,
) -> tuple[CompiledRoute, ...]:
    """A compiled route for each of ``rule``'s matches."""
    made = []
    for match in rule.matches:
        compiled = compile_route(rule, clusters, chain, route_label, rule_label, stats)
        if _replaces_prefix(rule.action) and match.path.kind == "prefix":
            compiled.prefix_from = match.path.value.rstrip("/").encode()
        made.append(compiled)
    return tuple(made)


def _rule_entries(rule: RuleIR, routes: tuple[CompiledRoute, ...], order: int, gap: int
                  ) -> tuple[RouterEntry[CompiledRoute], ...]:
    """The router entries of ``rule``'s matches, each with its compiled route, the first of
    order ``order``, the next ``gap`` further."""
    matches = rule.matches
    if len(matches) == 1:  # most rules
        return (RouterEntry(rule.hostnames, matches[0], routes[0], order),)
    return tuple(RouterEntry(rule.hostnames, match, compiled, order + i * gap)
                 for i, (match, compiled) in enumerate(zip(matches, routes, strict=True)))


def _replaces_prefix(action: Action) -> bool:
    """Whether ``action`` replaces the matched path prefix (a rewrite or a redirect)."""
    if isinstance(action, ForwardIR):
        return action.rewrite is not None and action.rewrite.prefix is not None
    return isinstance(action, RedirectIR) and action.prefix is not None


def rule_labels(rule: RuleIR) -> tuple[str, str]:
    """A rule's ``route`` and ``rule`` labels in metrics, access logs and traces: the
    namespace/name of the resource that owns it, and its own name or, unnamed, its index in
    that resource (``rule #N`` in policy sources and ``propylon explain``), so that another
    team's Route added before it changes neither its series nor its compiled routes. A
    RouteTable reached through two delegating rules counts its rules' requests once."""
    route = rule.route.split(" ", 1)[-1]
    if rule.name:
        return route, rule.name
    return route, rule.id.split("@", 1)[0].rpartition(":")[2]


class _ClusterSettings(NamedTuple):
    """What a cluster takes of its Upstream besides its endpoints, by attribute name."""

    make_balancer: Callable[[list[ClusterEndpoint]], Balancer[ClusterEndpoint]]
    hash_kind: str | None
    hash_name: str
    panic_threshold: float
    ejection: EjectionPolicy | None
    breaker: CircuitBreakerIR | None
    failover_threshold: float


def _cluster_settings(upstream: UpstreamIR) -> _ClusterSettings:
    hash_on = upstream.hash_on if upstream.lb_policy == "ring_hash" else None
    passive = upstream.passive_health
    return _ClusterSettings(
        functools.partial(make_balancer, upstream.lb_policy, hash_on=upstream.hash_on),
        hash_on.kind if hash_on else None,
        hash_on.name.lower() if hash_on else "",
        upstream.panic_threshold,
        EjectionPolicy(
            passive.consecutive_errors, passive.base_ejection_time,
            passive.max_ejection_time, passive.max_ejection_percent,
        ) if passive is not None else None,
        upstream.circuit_breaker,
        upstream.failover_threshold,
    )


def compile_cluster(gateway: str, upstream: UpstreamIR, services: Services) -> Cluster:
    groups = cluster_endpoints(upstream, services, {})
    settings = _cluster_settings(upstream)
    cluster = Cluster(
        upstream.key,
        [e for group in groups for e in group],
        settings.make_balancer,
        settings.hash_kind,
        settings.hash_name,
        services.metrics.upstream(gateway, upstream.key),
        panic_threshold=settings.panic_threshold,
        ejection=settings.ejection,
        breaker=settings.breaker,
        groups=groups if upstream.failover else None,
        failover_threshold=settings.failover_threshold,
    )
    needs = discovery.queries(upstream)
    if needs:
        cluster.source, cluster.queries = upstream, needs
    return cluster


def _take_over(cluster: Cluster, upstream: UpstreamIR, groups: list[list[ClusterEndpoint]]
               ) -> None:
    """``upstream``'s settings and endpoints (``groups``), given to a kept ``cluster`` in
    place, and with DNS discovery the IR and queries its endpoints follow: as one compiled
    from ``upstream`` would have them; its circuit breaker's counts and its endpoints' load
    counts and health carry on."""
    for name, value in zip(_ClusterSettings._fields, _cluster_settings(upstream), strict=True):
        setattr(cluster, name, value)
    needs = discovery.queries(upstream)
    cluster.source, cluster.queries = (upstream, needs) if needs else (None, frozenset())
    cluster.set_endpoints(groups)


def kept_cluster(gateway: str, upstream: UpstreamIR, services: Services) -> Cluster:
    """The cluster of the last compilation when ``upstream`` is equal to its IR and its
    endpoints, expanded again, are the very ones it has (``route_memo.py``), or when it
    differs from it otherwise, or the DNS answers did (it takes ``upstream``'s endpoints and
    settings over once the compilation is committed: the rules forwarding to it keep what
    they compiled); a new one for an Upstream the Gateway did not have (and for a check,
    ``services.once``, which changes nothing it does not make)."""
    memo = services.clusters
    last = memo.last(gateway, upstream)
    cluster = None
    if last is not None and (last[0] == upstream or not services.once):
        compiled_from, cluster = last
        groups = cluster_endpoints(upstream, services, _by_pool(cluster))
        if compiled_from != upstream or not _same_endpoints(cluster, groups):
            if services.once:  # a check changes nothing it does not make
                cluster = None
            else:
                memo.move(functools.partial(_take_over, cluster, upstream, groups))
    if cluster is None:
        cluster = compile_cluster(gateway, upstream, services)
    memo.add(gateway, upstream, cluster)
    return cluster


def _same_endpoints(cluster: Cluster, groups: list[list[ClusterEndpoint]]) -> bool:
    flat = [e for group in groups for e in group]
    if len(flat) != len(cluster.endpoints) or any(
            a is not b for a, b in zip(flat, cluster.endpoints, strict=True)):
        return False
    return not cluster.groups or [len(g) for g in groups] == [len(g) for g in cluster.groups]


def refresh_cluster(cluster: Cluster, services: Services) -> None:
    """New DNS answers: the cluster's endpoints again from its IR, keeping the endpoint
    objects (their load counts, their pools' connections) of addresses that remain."""
    assert cluster.source is not None
    cluster.set_endpoints(cluster_endpoints(cluster.source, services, _by_pool(cluster)))


def _by_pool(cluster: Cluster) -> dict[tuple[EndpointPool, int], ClusterEndpoint]:
    """``cluster``'s endpoints by pool and weight: those an expansion keeps (their load
    counts, their pools' connections)."""
    return {(e.pool, e.weight): e for e in cluster.endpoints}


def cluster_endpoints(
    upstream: UpstreamIR, services: Services,
    kept: dict[tuple[EndpointPool, int], ClusterEndpoint],
) -> list[list[ClusterEndpoint]]:
    """Each priority group's endpoints, with the DNS answers ``services`` holds."""
    http2 = upstream.protocol == "HTTP2"
    groups = []
    for group in discovery.endpoint_groups(upstream, services.answers):
        endpoints = []
        for found in group:
            ep = found.endpoint
            tls = upstream.tls
            if tls is not None and tls.sni is None and found.name is not None:
                tls = dataclasses.replace(tls, sni=found.name)  # verify the name, not the IP
            try:
                pool = services.pools.get(
                    ep.address, ep.port, tls, upstream.proxy_protocol_version, http2=http2)
            except ValueError as exc:  # its TLS files cannot be loaded
                raise CompileError(f"Upstream {upstream.key}: {exc}") from exc
            pool.configure(
                upstream.max_connections_per_endpoint,
                upstream.max_idle_per_endpoint,
                upstream.connect_timeout,
                upstream.idle_timeout,
            )
            endpoint = kept.get((pool, ep.weight))
            if endpoint is None:
                health = services.health.get(upstream.key, f"{ep.address}:{ep.port}")
                endpoint = ClusterEndpoint(pool, ep.weight, health)
            endpoints.append(endpoint)
        groups.append(endpoints)
    return groups


def compile_tracing(gateway: str, spec: TracingIR | None, services: Services) -> Filter | None:
    """The Gateway's tracing hooks, or None (then no chain gets any)."""
    if spec is None:
        return None
    from propylon.observability.trace_filter import TracingFilter
    from propylon.observability.tracing_export import TracerPipelines, resolve_tracing

    if services.tracing is None:
        services.tracing = TracerPipelines(export=services.export_traces)
    settings = resolve_tracing(spec)
    sink = services.tracing.sink(settings)
    kept = services.tracing_filters.get(gateway)
    if kept is not None and kept[0] == settings and kept[1] is sink:
        return kept[2]  # the same object: the chain memo keeps the Gateway's chains
    made = TracingFilter(gateway, sink, settings.ratio)
    services.tracing_filters[gateway] = (settings, sink, made)
    return made


def compile_chain(policies: tuple[PolicyIR, ...], env: FilterEnv,
                  first: Filter | None = None) -> FilterChain:
    """The chain of ``policies`` alone (``compile_rule_chain`` without a Gateway's default
    policies), after ``first`` (a tracing filter) if given."""
    return compile_rule_chain(policies, env, DefaultFilters(ChainHead(first, ()), (), False))[0]


class DefaultFilters(NamedTuple):
    """A compilation's makers of filters for its Gateway's default policies (validated once:
    each rule that applies one gets a filter of its own), by type, in the table's order."""

    head: ChainHead
    makers: tuple[tuple[str, int, Callable[[], Filter]], ...]  # type, rank, maker
    renewed: bool  # the head is not the one of the Gateway's last compilation

    @classmethod
    def of(cls, head: ChainHead, env: FilterEnv, renewed: bool = False) -> DefaultFilters:
        table = policy_types()
        makers = [(p.type, table.rank(p.type), filter_maker(p, env, table))
                  for p in head.defaults]
        return cls(head, tuple(sorted(makers, key=operator.itemgetter(1))), renewed)


def compile_rule_chain(
    own: tuple[PolicyIR, ...], env: FilterEnv, defaults: DefaultFilters,
    own_filters: tuple[Filter, ...] | None = None,
) -> tuple[FilterChain, tuple[Filter, ...]]:
    """A rule's chain: its head's tracing filter, then the filters of its effective policies
    (``ir.effective_policies``: its ``own`` and the Gateway's default policies of the types
    it has none of), in this process's order of policy types: the IR's order for built-in
    types, and a plugin where its class says, even when the IR came from a control plane
    that orders it otherwise (one that passes on a plugin it does not have). Also the
    filters of its own policies, given as ``own_filters`` when they are kept from its last
    chain."""
    tracing = defaults.head.tracing
    first = (tracing,) if tracing is not None else ()
    if not own:  # most rules: the Gateway's policies alone, in order already
        if not defaults.makers and tracing is None:
            return EMPTY_CHAIN, ()
        return FilterChain((*first, *[make() for _, _, make in defaults.makers])), ()
    table = policy_types()
    if own_filters is None:
        own_filters = tuple([build_filter(p, env, table) for p in own])
    made = [(table.rank(p.type), f) for p, f in zip(own, own_filters, strict=True)]
    if defaults.makers:
        types = {p.type for p in own}
        made += [(rank, make()) for kind, rank, make in defaults.makers if kind not in types]
    if len(made) > 1:
        made.sort(key=operator.itemgetter(0))
    return FilterChain((*first, *(f for _, f in made))), own_filters


def compile_route(
    rule: RuleIR,
    clusters: dict[str, Cluster],
    chain: FilterChain,
    route_label: str,
    rule_label: str,
    stats: object,
) -> CompiledRoute:
    compiled = CompiledRoute(rule.id, route_label, rule_label, stats)  # type: ignore[arg-type]
    compiled.chain = chain
    action = rule.action
    if isinstance(action, ForwardIR):
        compiled.kind = FORWARD
        compiled.timeout = action.timeout
        compiled.retry = RetryPolicy(action.retries) if action.retries is not None else None
        if action.mirror is not None:
            compiled.mirror = clusters[action.mirror.upstream]
            compiled.mirror_percent = action.mirror.percent
        targets: list[Cluster | None] = [clusters[b.upstream] for b in action.backends]
        weights = [b.weight for b in action.backends]
        if action.unresolved_weight:  # picked as None: that share answers 500
            targets.append(None)
            weights.append(action.unresolved_weight)
            compiled.unresolved_share = True
        if len(targets) == 1 and weights[0] > 0:
            compiled.single_cluster = targets[0]
        else:
            compiled.backends = WeightedChoice(targets, weights)
        if action.rewrite is not None:
            if action.rewrite.full_path is not None:
                compiled.replace_path = action.rewrite.full_path.encode()
            elif action.rewrite.prefix is not None:
                compiled.prefix_to = action.rewrite.prefix.encode()
    elif isinstance(action, RedirectIR):
        compiled.kind = REDIRECT
        compiled.redirect = action
    elif isinstance(action, DirectResponseIR):
        compiled.kind = DIRECT
        compiled.direct_status = action.status
        compiled.direct_body = action.body.encode()
        compiled.direct_content_type = action.content_type.encode()
    return compiled
