"""The proxy's ``/metrics``: the workers' summed counters as ``prometheus_client`` families.

The hot path keeps its plain counters (``propylon.observability.metrics``); at scrape time the
supervisor sums the workers' snapshots and this module turns the sum into metric families,
which ``render`` encodes as the Prometheus text format or, when the scraper's Accept asks for
it, OpenMetrics. Series (documented in docs/operations.md):

  propylon_requests_total{gateway,route,rule,code}          code: status class "2xx"
  propylon_requests_by_status_total{gateway,route,rule,status}
  propylon_request_duration_seconds{gateway,route,rule}      histogram
  propylon_request_body_bytes_total / propylon_response_body_bytes_total{gateway,route,rule}
  propylon_policy_denials_total{gateway,route,rule,policy,type,status}
  propylon_grpc_responses_total{gateway,route,rule,grpc_code}
  propylon_upstream_responses_total{gateway,upstream,code}
  propylon_upstream_responses_by_status_total{gateway,upstream,status}
  propylon_upstream_response_seconds{gateway,upstream}       histogram, to the answer's head
  propylon_upstream_events_total{gateway,upstream,kind}
  propylon_upstream_requests_in_flight{gateway,upstream}
  propylon_upstream_endpoint_healthy / _ejected{upstream,endpoint}
  propylon_client_connections{listener}, propylon_requests_in_flight{listener}
  propylon_proxy_protocol_refused_total{listener,reason}
  propylon_waf_requests_total{action}, propylon_waf_rule_matches_total{rule,action}
  propylon_tracing_spans_exported_total, propylon_tracing_spans_dropped_total{reason}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from propylon.observability.log_metrics import log_families
from propylon.observability.metrics import (
    LATENCY_BOUNDS,
    STATUS_SLOTS,
    UPSTREAM_BOUNDS,
    UPSTREAM_COUNTERS,
    class_counts,
)
from propylon.observability.tracing_metrics import tracing_families
from propylon.observability.waf_metrics import waf_families

ROUTE_LABELS = ["gateway", "route", "rule"]
UPSTREAM_LABELS = ["gateway", "upstream"]


class _Families:
    """A collector over families computed before the scrape is encoded."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(families: Iterable[Metric], accept: str = "") -> tuple[bytes, str]:
    """The exposition of ``families`` and its content type (OpenMetrics when ``accept``
    asks for it, else the Prometheus text format 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def request_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    """Per rule: requests by class and by status, latency, body bytes, policy refusals. A
    rule has series once a request has ended on it (the workers' snapshots hold only those,
    ``MetricsRegistry.snapshot``): 10,000 Routes of 4 rules, mostly idle, were 760,000
    samples and 78 MB per scrape."""
    by_class = CounterMetricFamily(
        "propylon_requests", "Requests answered, by route and status class.",
        labels=[*ROUTE_LABELS, "code"])
    by_status = CounterMetricFamily(
        "propylon_requests_by_status", "Requests answered, by route and status code (an "
        "unregistered code counts under its class, e.g. 4xx).", labels=[*ROUTE_LABELS, "status"])
    latency = HistogramMetricFamily(
        "propylon_request_duration_seconds", "Time from request head to response end.",
        labels=ROUTE_LABELS)
    bytes_in = CounterMetricFamily(
        "propylon_request_body_bytes", "Request body bytes received.", labels=ROUTE_LABELS)
    bytes_out = CounterMetricFamily(
        "propylon_response_body_bytes", "Response body bytes sent.", labels=ROUTE_LABELS)
    denials = CounterMetricFamily(
        "propylon_policy_denials", "Requests a policy refused (answered 400 or above "
        "instead of the upstream), by policy attachment and type.",
        labels=[*ROUTE_LABELS, "policy", "type", "status"])
    grpc = CounterMetricFamily(
        "propylon_grpc_responses", "gRPC answers by grpc-status (0-16, from the upstream's "
        "trailers or the gateway's own Trailers-Only answers).",
        labels=[*ROUTE_LABELS, "grpc_code"])
    for item in snapshot["routes"]:
        key = item["key"]
        classes = class_counts(item["codes"])
        for cls in range(1, 6):
            if classes[cls]:
                by_class.add_metric([*key, f"{cls}xx"], classes[cls])
        _add_codes(by_status, key, item["codes"])
        latency.add_metric(key, _buckets(LATENCY_BOUNDS, item["buckets"]), item["sum"])
        bytes_in.add_metric(key, item["bytes_in"])
        bytes_out.add_metric(key, item["bytes_out"])
        for policy, policy_type, status, count in item["denials"]:
            denials.add_metric([*key, policy, policy_type, str(status)], count)
        for code, count in item.get("grpc", ()):
            grpc.add_metric([*key, str(code)], count)
    yield from (by_class, by_status, latency, bytes_in, bytes_out, denials, grpc)


def upstream_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    by_class = CounterMetricFamily(
        "propylon_upstream_responses", "Upstream responses, by status class.",
        labels=[*UPSTREAM_LABELS, "code"])
    by_status = CounterMetricFamily(
        "propylon_upstream_responses_by_status", "Upstream responses, by status code.",
        labels=[*UPSTREAM_LABELS, "status"])
    head_time = HistogramMetricFamily(
        "propylon_upstream_response_seconds", "Time from sending a request upstream to its "
        "answer's head, per try.", labels=UPSTREAM_LABELS)
    events = CounterMetricFamily(
        "propylon_upstream_events", "Connect failures, timeouts, retries, retries the budget "
        "refused, passive ejections and circuit-breaker overflows, per upstream.",
        labels=[*UPSTREAM_LABELS, "kind"])
    in_flight = GaugeMetricFamily(
        "propylon_upstream_requests_in_flight", "Requests forwarded to the upstream and not "
        "finished yet.", labels=UPSTREAM_LABELS)
    for item in snapshot["upstreams"]:
        key = item["key"]
        classes = class_counts(item["codes"])
        for cls in range(1, 6):
            if classes[cls]:
                by_class.add_metric([*key, f"{cls}xx"], classes[cls])
        _add_codes(by_status, key, item["codes"])
        head_time.add_metric(key, _buckets(UPSTREAM_BOUNDS, item["buckets"]), item["sum"])
        for name, kind in UPSTREAM_COUNTERS.items():
            events.add_metric([*key, kind], item["counters"][name])
        in_flight.add_metric(key, item.get("active", 0))
    yield from (by_class, by_status, head_time, events, in_flight)


def endpoint_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    healthy = GaugeMetricFamily(
        "propylon_upstream_endpoint_healthy", "Active health checks' verdict (1 healthy).",
        labels=["upstream", "endpoint"])
    ejected = GaugeMetricFamily(
        "propylon_upstream_endpoint_ejected", "Workers in which passive health checking has "
        "ejected the endpoint.", labels=["upstream", "endpoint"])
    for ep in snapshot.get("endpoints", []):
        healthy.add_metric([ep["upstream"], ep["endpoint"]], int(ep["healthy"]))
        ejected.add_metric([ep["upstream"], ep["endpoint"]], ep["ejected_in_workers"])
    yield from (healthy, ejected)


def listener_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    connections = GaugeMetricFamily(
        "propylon_client_connections", "Open client connections, per listener.",
        labels=["listener"])
    for listener, value in snapshot.get("connections", []):
        connections.add_metric([listener], value)
    in_flight = GaugeMetricFamily(
        "propylon_requests_in_flight", "Requests read and not answered yet (pipelined ones "
        "included), per listener.", labels=["listener"])
    for listener, value in snapshot.get("in_flight", []):
        in_flight.add_metric([listener], value)
    refused = CounterMetricFamily(
        "propylon_proxy_protocol_refused", "Connections closed over their PROXY protocol "
        "header (missing, malformed, untrusted, timeout), per listener.",
        labels=["listener", "reason"])
    for listener, reason, count in snapshot.get("proxy_protocol", []):
        refused.add_metric([listener, reason], count)
    yield from (connections, in_flight, refused)


def snapshot_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    """Every family of a merged worker snapshot."""
    yield from request_families(snapshot)
    yield from upstream_families(snapshot)
    yield from endpoint_families(snapshot)
    yield from listener_families(snapshot)
    yield from waf_families(snapshot)
    yield from tracing_families(snapshot)
    yield from log_families(snapshot)


def _add_codes(family: CounterMetricFamily, key: list[str], codes: list[int]) -> None:
    for slot, count in enumerate(codes):
        if count and slot:  # slot 0: ended without an answer
            family.add_metric([*key, STATUS_SLOTS[slot]], count)


def _buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Cumulative ``le`` buckets from per-bucket counts (the last one is +Inf)."""
    out: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return out
