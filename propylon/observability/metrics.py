"""Request metrics: plain counters updated on the hot path, rendered as Prometheus text.

Each worker owns a ``MetricsRegistry``. Counter objects are looked up by their labels once,
when a configuration is compiled, and kept by the compiled routes, so a request only adds to
list slots. Counters live in the registry, not in the compiled configuration, so they stay
monotonic across reloads. ``snapshot()`` gives plain data that a supervisor sums over workers.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# Latency histogram bounds in seconds (Prometheus ``le`` labels); the last bucket is +Inf.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

# Index into ``by_class`` for every status code (llhttp and the gateway produce 0-999):
# 1xx-5xx by their first digit, anything above 599 counted with 5xx.
STATUS_CLASS: tuple[int, ...] = tuple(min(status // 100, 5) for status in range(1000))


class RouteStats:
    """Requests of one route by status class (index 1-5) and their latency histogram."""

    __slots__ = ("buckets", "by_class", "latency_sum")

    def __init__(self) -> None:
        self.by_class = [0] * 6
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latency_sum = 0.0

    def record(self, status: int, seconds: float) -> None:
        self.by_class[STATUS_CLASS[status]] += 1
        self.buckets[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.latency_sum += seconds


# Upstream counters beyond responses by class: name -> (metric kind label, help).
UPSTREAM_COUNTERS: dict[str, str] = {
    "connect_failures": "connect_failure",
    "timeouts": "timeout",
    "retries": "retry",
    "retries_denied": "retry_budget_exhausted",
    "ejections": "ejection",
    "overflows": "circuit_breaker_overflow",
}


class UpstreamStats:
    """Responses of one upstream by status class, and what its resiliency features did."""

    __slots__ = (
        "by_class",
        "connect_failures",
        "ejections",
        "overflows",
        "retries",
        "retries_denied",
        "timeouts",
    )

    def __init__(self) -> None:
        self.by_class = [0] * 6
        self.connect_failures = 0
        self.timeouts = 0
        self.retries = 0
        self.retries_denied = 0  # retries the budget did not allow
        self.ejections = 0
        self.overflows = 0  # requests refused by the circuit breaker

    def record(self, status: int) -> None:
        self.by_class[STATUS_CLASS[status]] += 1


class MetricsRegistry:
    __slots__ = ("routes", "upstreams")

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], RouteStats] = {}
        self.upstreams: dict[tuple[str, str], UpstreamStats] = {}

    def route(self, gateway: str, route: str, rule: str) -> RouteStats:
        key = (gateway, route, rule)
        stats = self.routes.get(key)
        if stats is None:
            stats = self.routes[key] = RouteStats()
        return stats

    def upstream(self, gateway: str, upstream: str) -> UpstreamStats:
        key = (gateway, upstream)
        stats = self.upstreams.get(key)
        if stats is None:
            stats = self.upstreams[key] = UpstreamStats()
        return stats

    def snapshot(self) -> dict[str, Any]:
        return {
            "routes": [
                [list(k), s.by_class, s.buckets, s.latency_sum] for k, s in self.routes.items()
            ],
            "upstreams": [
                [list(k), s.by_class, {name: getattr(s, name) for name in UPSTREAM_COUNTERS}]
                for k, s in self.upstreams.items()
            ],
        }


def merge_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum worker snapshots into one."""
    routes: dict[tuple[str, ...], list[Any]] = {}
    upstreams: dict[tuple[str, ...], list[Any]] = {}
    for snap in snapshots:
        for key, by_class, buckets, total in snap.get("routes", []):
            acc = routes.setdefault(tuple(key), [[0] * 6, [0] * len(buckets), 0.0])
            acc[0] = [a + b for a, b in zip(acc[0], by_class, strict=True)]
            acc[1] = [a + b for a, b in zip(acc[1], buckets, strict=True)]
            acc[2] += total
        for key, by_class, counters in snap.get("upstreams", []):
            acc = upstreams.setdefault(tuple(key), [[0] * 6, dict.fromkeys(UPSTREAM_COUNTERS, 0)])
            acc[0] = [a + b for a, b in zip(acc[0], by_class, strict=True)]
            for name in UPSTREAM_COUNTERS:
                acc[1][name] += counters.get(name, 0)
    return {
        "routes": [[list(k), *v] for k, v in sorted(routes.items())],
        "upstreams": [[list(k), *v] for k, v in sorted(upstreams.items())],
        "endpoints": merge_endpoints(snapshots),
        "panic": sorted({key for snap in snapshots for key in snap.get("panic", [])}),
        "proxy_protocol": merge_proxy_protocol(snapshots),
    }


def merge_proxy_protocol(snapshots: list[dict[str, Any]]) -> list[list[Any]]:
    """Connections refused over their PROXY header, by listener and reason, over workers."""
    counts: dict[tuple[str, str], int] = {}
    for snap in snapshots:
        for listener, reason, count in snap.get("proxy_protocol", []):
            counts[(listener, reason)] = counts.get((listener, reason), 0) + count
    return [[listener, reason, count] for (listener, reason), count in sorted(counts.items())]


def merge_endpoints(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Endpoint health over workers: active-check verdicts are the same in every worker;
    passive ejections are per worker, so they are counted."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for snap in snapshots:
        for (upstream, endpoint), state in snap.get("endpoints", []):
            acc = merged.setdefault((upstream, endpoint), {
                "upstream": upstream, "endpoint": endpoint, "healthy": True,
                "ejected_in_workers": 0, "ejections": 0, "active_requests": 0,
            })
            acc["healthy"] = acc["healthy"] and state["healthy"]
            acc["ejected_in_workers"] += int(state["ejected"])
            acc["ejections"] += state["ejections"]
            acc["active_requests"] += state["active"]
    return [merged[key] for key in sorted(merged)]


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(snapshot: dict[str, Any], extra: list[str] | None = None) -> str:
    """The Prometheus text exposition (format 0.0.4) of a merged snapshot."""
    out = [
        "# HELP propylon_requests_total Requests answered, by route and status class.",
        "# TYPE propylon_requests_total counter",
    ]
    for (gateway, route, rule), by_class, _, _ in snapshot["routes"]:
        for cls in range(1, 6):
            if by_class[cls]:
                labels = _labels(gateway=gateway, route=route, rule=rule, code=f"{cls}xx")
                out.append(f"propylon_requests_total{labels} {by_class[cls]}")
    out += [
        "# HELP propylon_request_duration_seconds Time from request head to response end.",
        "# TYPE propylon_request_duration_seconds histogram",
    ]
    for (gateway, route, rule), _, buckets, total in snapshot["routes"]:
        cumulative = 0
        base = f'gateway="{_escape(gateway)}",route="{_escape(route)}",rule="{_escape(rule)}"'
        for bound, count in zip((*LATENCY_BOUNDS, float("inf")), buckets, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'propylon_request_duration_seconds_bucket{{{base},le="{le}"}} {cumulative}')
        out.append(f"propylon_request_duration_seconds_sum{{{base}}} {total}")
        out.append(f"propylon_request_duration_seconds_count{{{base}}} {cumulative}")
    out += [
        "# HELP propylon_upstream_responses_total Upstream responses, by status class.",
        "# TYPE propylon_upstream_responses_total counter",
    ]
    for (gateway, upstream), by_class, _ in snapshot["upstreams"]:
        for cls in range(1, 6):
            if by_class[cls]:
                labels = _labels(gateway=gateway, upstream=upstream, code=f"{cls}xx")
                out.append(f"propylon_upstream_responses_total{labels} {by_class[cls]}")
    out += [
        "# HELP propylon_upstream_events_total Connect failures, timeouts, retries, retries the"
        " budget refused, passive ejections and circuit-breaker overflows, per upstream.",
        "# TYPE propylon_upstream_events_total counter",
    ]
    for (gateway, upstream), _, counters in snapshot["upstreams"]:
        for name, kind in UPSTREAM_COUNTERS.items():
            labels = _labels(gateway=gateway, upstream=upstream, kind=kind)
            out.append(f"propylon_upstream_events_total{labels} {counters[name]}")
    out += [
        "# HELP propylon_upstream_endpoint_healthy Active health checks' verdict (1 healthy).",
        "# TYPE propylon_upstream_endpoint_healthy gauge",
    ]
    endpoints = snapshot.get("endpoints", [])
    for ep in endpoints:
        labels = _labels(upstream=ep["upstream"], endpoint=ep["endpoint"])
        out.append(f"propylon_upstream_endpoint_healthy{labels} {int(ep['healthy'])}")
    out += [
        "# HELP propylon_upstream_endpoint_ejected Workers in which passive health checking"
        " has ejected the endpoint.",
        "# TYPE propylon_upstream_endpoint_ejected gauge",
    ]
    for ep in endpoints:
        labels = _labels(upstream=ep["upstream"], endpoint=ep["endpoint"])
        out.append(f"propylon_upstream_endpoint_ejected{labels} {ep['ejected_in_workers']}")
    out += [
        "# HELP propylon_proxy_protocol_refused_total Connections closed over their PROXY"
        " protocol header (missing, malformed, untrusted, timeout), per listener.",
        "# TYPE propylon_proxy_protocol_refused_total counter",
    ]
    for listener, reason, count in snapshot.get("proxy_protocol", []):
        labels = _labels(listener=listener, reason=reason)
        out.append(f"propylon_proxy_protocol_refused_total{labels} {count}")
    out.extend(extra or [])
    return "\n".join(out) + "\n"
