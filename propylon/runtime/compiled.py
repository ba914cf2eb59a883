"""The compiled runtime: immutable objects built from the IR, read by every request.

Installing a configuration is one reference assignment (``Worker.install``); requests in flight
keep the ``GatewayRuntime`` they started with. Nothing here parses config or compiles anything
per request: redirect/direct answers, rewrite prefixes and filter phase tuples are all prepared
by ``compile.py``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from propylon.ir import CircuitBreakerIR, ListenerIR, RedirectIR, UpstreamIR
from propylon.runtime.balancer import NO_ENDPOINTS, Balancer, PriorityBalancer
from propylon.runtime.health import EjectionPolicy, EndpointHealth
from propylon.runtime.priority import priority_loads

log = logging.getLogger("propylon.upstream")

if TYPE_CHECKING:
    from propylon.filters.base import Filter
    from propylon.observability.metrics import RouteStats, UpstreamStats
    from propylon.runtime.discovery import DnsQuery
    from propylon.runtime.pools import EndpointPool
    from propylon.runtime.retry import RetryPolicy
    from propylon.runtime.router import Router

FORWARD: Final = 0
REDIRECT: Final = 1
DIRECT: Final = 2

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClusterEndpoint:
    """An endpoint as one upstream sees it: its weight there, its pool, load and health."""

    __slots__ = ("active", "health", "key", "label", "pool", "weight")

    def __init__(self, pool: EndpointPool, weight: int, health: EndpointHealth) -> None:
        self.pool = pool
        self.weight = weight
        self.health = health
        self.active = 0
        self.label = f"{pool.address}:{pool.port}"
        self.key = self.label  # what ring_hash places on its ring


def _weighted(endpoints: Sequence[ClusterEndpoint]) -> int:
    """How many of ``endpoints`` take traffic (weight above 0): a group's capacity."""
    return sum(1 for e in endpoints if e.weight > 0)


class Cluster:
    """One Upstream: its endpoints, the balancer over the usable ones, its limits.

    With failover groups, ``groups`` holds each priority group's endpoints and ``endpoints``
    all of them; without, ``groups`` is empty and nothing about groups is computed. The
    endpoint set changes in place (``set_endpoints``) when DNS answers change, as the
    balancer does when health changes: a request in flight keeps the endpoint it picked.
    ``serving`` is the endpoints of the groups that take traffic (retries choose there).
    """

    __slots__ = (
        "active_requests",
        "balancer",
        "breaker",
        "ejection",
        "endpoints",
        "failover_threshold",
        "groups",
        "hash_kind",
        "hash_name",
        "key",
        "loads",
        "make_balancer",
        "panic",
        "panic_threshold",
        "queries",
        "recheck_at",
        "retries_active",
        "serving",
        "source",
        "stats",
    )

    def __init__(
        self,
        key: str,
        endpoints: list[ClusterEndpoint],
        make_balancer: Callable[[list[ClusterEndpoint]], Balancer[ClusterEndpoint]],
        hash_kind: str | None,
        hash_name: str,
        stats: UpstreamStats,
        panic_threshold: float = 50.0,
        ejection: EjectionPolicy | None = None,
        breaker: CircuitBreakerIR | None = None,
        groups: list[list[ClusterEndpoint]] | None = None,
        failover_threshold: float = 70.0,
    ) -> None:
        self.key = key
        self.endpoints = endpoints
        self.groups: tuple[list[ClusterEndpoint], ...] = ()
        self.serving = endpoints
        self.loads: list[int] = []  # per-mille per group, with failover groups
        self.failover_threshold = failover_threshold
        # with DNS discovery: the IR its endpoints are expanded from, and the queries whose
        # answers they depend on (``compile.refresh_cluster``)
        self.source: UpstreamIR | None = None
        self.queries: frozenset[DnsQuery] = frozenset()
        self.make_balancer = make_balancer
        self.hash_kind = hash_kind
        self.hash_name = hash_name
        self.stats = stats
        self.panic_threshold = panic_threshold
        self.ejection = ejection  # passive health checking, when configured
        self.breaker = breaker
        self.active_requests = 0  # in flight to this upstream (circuit breaker, retry budget)
        self.retries_active = 0
        self.panic = False
        self.recheck_at = float("inf")  # when an ejection ends
        self.balancer: Balancer[ClusterEndpoint] = NO_ENDPOINTS
        if groups is not None:
            self.set_endpoints(groups)
        else:
            self.rebalance(time.monotonic())

    def set_endpoints(self, groups: list[list[ClusterEndpoint]]) -> None:
        """Install a new endpoint set (priority groups, 0 first) and rebalance over it."""
        self.endpoints = [e for group in groups for e in group]
        self.groups = tuple(groups) if len(groups) > 1 else ()
        self.serving = self.endpoints
        self.rebalance(time.monotonic())

    def rebalance(self, now: float) -> None:
        """Rebuild the balancer over the endpoints usable now (or all of them in panic)."""
        if self.groups:
            self._rebalance_groups(now)
        else:
            usable = [e for e in self.endpoints if e.health.usable(now)]
            # a drained endpoint (weight 0) takes no traffic: it counts for no capacity
            self.panic = (_weighted(usable) * 100
                          < self.panic_threshold * _weighted(self.endpoints))
            self.balancer = self.make_balancer(self.endpoints if self.panic else usable)
        ends = [e.health.ejected_until for e in self.endpoints if e.health.ejected_until > now]
        self.recheck_at = min(ends) if ends else float("inf")

    def _rebalance_groups(self, now: float) -> None:
        """Failover: each group's load from the health of the groups (``priority.py``), a
        balancer per group that takes traffic, and one over them while several do."""
        usable = [[e for e in group if e.health.usable(now)] for group in self.groups]
        self.loads, self.panic = priority_loads(
            [_weighted(u) for u in usable], [_weighted(g) for g in self.groups],
            self.failover_threshold, self.panic_threshold)
        chosen = [(group if self.panic else ok, load)
                  for group, ok, load in zip(self.groups, usable, self.loads, strict=True)
                  if load > 0]
        self.serving = [e for endpoints, _ in chosen for e in endpoints]
        if len(chosen) == 1:
            self.balancer = self.make_balancer(chosen[0][0])
        else:
            self.balancer = PriorityBalancer(
                [self.make_balancer(endpoints) for endpoints, _ in chosen],
                [load for _, load in chosen])

    def record(self, endpoint: ClusterEndpoint, ok: bool, now: float) -> None:
        """Passive health: count an outcome of a request to ``endpoint``."""
        ejection = self.ejection
        if ejection is None:
            return
        health = endpoint.health
        if ok:
            health.consecutive_errors = 0
            return
        health.consecutive_errors += 1
        if health.consecutive_errors < ejection.consecutive_errors or not health.usable(now):
            return
        ejected = sum(1 for e in self.endpoints if e.health.ejected_until > now)
        if (ejected + 1) * 100 > ejection.max_ejection_percent * len(self.endpoints):
            return
        health.ejections += 1
        health.consecutive_errors = 0
        health.ejected_until = now + ejection.ejection_time(health.ejections)
        self.stats.ejections += 1
        log.warning("upstream %s: endpoint %s ejected for %.0fs after consecutive errors",
                    self.key, endpoint.label, health.ejected_until - now)
        self.rebalance(now)

    def another_endpoint(self, avoid: ClusterEndpoint) -> ClusterEndpoint | None:
        """For a retry: the least loaded usable endpoint other than ``avoid``, if any."""
        now = time.monotonic()
        others = [
            e for e in self.serving
            if e is not avoid and e.weight > 0 and (self.panic or e.health.usable(now))
        ]
        return min(others, key=lambda e: e.active / e.weight) if others else None

    def overloaded(self) -> bytes | None:
        """Which circuit-breaker limit a new request would exceed, if any."""
        breaker = self.breaker
        if breaker is None:
            return None
        if self.active_requests >= breaker.max_requests:
            return b"max_requests"
        return None

    def may_open_connection(self) -> bool:
        breaker = self.breaker
        if breaker is None:
            return True
        return sum(e.pool.total for e in self.endpoints) < breaker.max_connections

    def may_queue(self) -> bool:
        breaker = self.breaker
        if breaker is None:
            return True
        return sum(len(e.pool.waiters) for e in self.endpoints) < breaker.max_pending_requests


class FilterChain:
    """A rule's filters split into per-phase tuples of bound methods (only overriders; the
    filters themselves for ``on_request``)."""

    __slots__ = (
        "filters",
        "on_log",
        "on_request",
        "on_request_body",
        "on_response",
        "on_response_body",
        "on_trailers",
        "on_upstream_request",
        "request_body_buffer",
        "request_body_rewritten",
        "response_body_buffer",
        "response_body_rewritten",
    )

    def __init__(self, filters: tuple[Filter, ...]) -> None:
        from propylon.filters.base import overrides

        self.filters = filters
        # the filters themselves for the request phase, the phase most requests meet: the
        # compiled session calls their method directly, where a bound method is a Python call
        self.on_request = tuple(f for f in filters if overrides(f, "on_request"))
        self.on_upstream_request = tuple(
            f.on_upstream_request for f in filters if overrides(f, "on_upstream_request")
        )
        request_body = [f for f in filters if overrides(f, "on_request_body")]
        self.on_request_body = tuple(f.on_request_body for f in request_body)
        # Responses travel back through the filters in reverse order.
        self.on_response = tuple(
            f.on_response for f in reversed(filters) if overrides(f, "on_response")
        )
        response_body = [f for f in reversed(filters) if overrides(f, "on_response_body")]
        self.on_response_body = tuple(f.on_response_body for f in response_body)
        self.on_trailers = tuple(
            f.on_trailers for f in reversed(filters) if overrides(f, "on_trailers")
        )
        self.on_log = tuple(f.on_log for f in filters if overrides(f, "on_log"))
        # Whole bodies asked for: the largest cap of the filters that ask (0: streamed).
        self.request_body_buffer = max((f.request_body_buffer for f in request_body), default=0)
        self.response_body_buffer = max((f.response_body_buffer for f in response_body),
                                        default=0)
        # A body filter that may change lengths makes the session re-frame that body.
        self.request_body_rewritten = any(not f.body_inspect_only for f in request_body)
        self.response_body_rewritten = any(not f.body_inspect_only for f in response_body)


EMPTY_CHAIN = FilterChain(())


class CompiledRoute:
    """What one (rule, match) pair does; the router's payload."""

    __slots__ = (
        "backends",
        "chain",
        "direct_body",
        "direct_content_type",
        "direct_status",
        "kind",
        "mirror",
        "mirror_percent",
        "prefix_from",
        "prefix_to",
        "redirect",
        "replace_path",
        "retry",
        "route_label",
        "rule_id",
        "rule_label",
        "single_cluster",
        "stats",
        "timeout",
        "unresolved_share",
    )

    def __init__(self, rule_id: str, route_label: str, rule_label: str, stats: RouteStats) -> None:
        self.rule_id = rule_id
        self.route_label = route_label
        self.rule_label = rule_label
        self.stats = stats
        self.kind = DIRECT
        self.chain = EMPTY_CHAIN
        self.backends: Any = None  # WeightedChoice[Cluster] when there are several backends
        self.single_cluster: Cluster | None = None
        self.unresolved_share = False  # backends picks None for unresolved backends' share
        self.timeout = 60.0
        self.retry: RetryPolicy | None = None
        self.mirror: Cluster | None = None
        self.mirror_percent = 100.0
        self.prefix_from: bytes | None = None  # rewrite: the matched prefix ...
        self.prefix_to = b""  # ... and what replaces it
        self.replace_path: bytes | None = None  # rewrite: full path
        self.redirect: RedirectIR | None = None
        self.direct_status = 200
        self.direct_body = b""
        self.direct_content_type = b"text/plain; charset=utf-8"


class GatewayRuntime:
    __slots__ = ("clusters", "key", "not_found", "router", "trusted_networks")

    def __init__(
        self,
        key: str,
        router: Router[CompiledRoute],
        clusters: dict[str, Cluster],
        trusted_networks: tuple[IPNetwork, ...],
        not_found: CompiledRoute,
    ) -> None:
        self.key = key
        self.router = router
        self.clusters = clusters
        self.trusted_networks = trusted_networks
        self.not_found = not_found

    def is_trusted(self, ip: str) -> bool:
        if not self.trusted_networks:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted_networks)


class HostSet:
    """The hostnames a listener serves: exact names and ``*.suffix`` wildcards."""

    __slots__ = ("exact", "suffixes")

    def __init__(self, hostnames: tuple[str, ...]) -> None:
        self.exact = frozenset(h.lower() for h in hostnames if not h.startswith("*."))
        self.suffixes = tuple(h[1:].lower() for h in hostnames if h.startswith("*."))

    def __contains__(self, host: str) -> bool:
        return host in self.exact or any(host.endswith(s) for s in self.suffixes)


class Runtime:
    """A whole compiled snapshot: every Gateway, and which one serves each listener."""

    __slots__ = ("gateways", "listener_hosts", "listener_specs", "listeners", "version")

    def __init__(
        self,
        version: str,
        gateways: dict[str, GatewayRuntime],
        listeners: dict[tuple[str, int], GatewayRuntime],
        listener_hosts: dict[tuple[str, int], HostSet | None],
        listener_specs: dict[tuple[str, int], ListenerIR],
    ) -> None:
        self.version = version
        self.gateways = gateways
        self.listeners = listeners
        self.listener_hosts = listener_hosts  # None: the listener serves any host
        self.listener_specs = listener_specs
