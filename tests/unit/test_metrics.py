from typing import Any

import pytest

from propylon.observability.exposition import render, snapshot_families
from propylon.observability.metrics import (
    STATUS_SLOTS,
    MetricsRegistry,
    merge_snapshots,
)
from tests.support.gateway import metric_value


def render_prometheus(snapshot: dict[str, Any]) -> str:
    return render(snapshot_families(snapshot))[0].decode()


def test_counters_merge_across_workers_and_render() -> None:
    a, b = MetricsRegistry(), MetricsRegistry()
    a.route("gw/edge", "shop/shop", "api").record(200, 0.003)
    b.route("gw/edge", "shop/shop", "api").record(503, 0.2)
    b.route("gw/edge", "shop/shop", "api").record(201, 20.0)
    a.upstream("gw/edge", "shop/v1").record(200)
    b.upstream("gw/edge", "shop/v1").connect_failures += 2
    merged = merge_snapshots([a.snapshot(), b.snapshot()])
    text = render_prometheus(merged)
    labels = {"gateway": "gw/edge", "route": "shop/shop", "rule": "api"}
    assert metric_value(text, "propylon_requests_total", code="2xx", **labels) == 2
    assert metric_value(text, "propylon_requests_total", code="5xx", **labels) == 1
    assert metric_value(text, "propylon_requests_by_status_total", status="201", **labels) == 1
    name = "propylon_request_duration_seconds"
    assert metric_value(text, f"{name}_bucket", le="0.005", **labels) == 1
    assert metric_value(text, f"{name}_bucket", le="0.25", **labels) == 2
    assert metric_value(text, f"{name}_bucket", le="+Inf", **labels) == 3
    assert metric_value(text, f"{name}_count", **labels) == 3
    assert metric_value(text, "propylon_upstream_events_total", gateway="gw/edge",
                        upstream="shop/v1", kind="connect_failure") == 2
    assert text.endswith("\n")


@pytest.mark.parametrize(("status", "label"), [
    pytest.param(404, "404", id="registered"),
    pytest.param(499, "4xx", id="unregistered-in-its-class"),
    pytest.param(799, "5xx", id="above-599-as-5xx"),
])
def test_status_codes_have_bounded_slots(status: int, label: str) -> None:
    reg = MetricsRegistry()
    reg.route("g", "r", "x").record(status, 0.1)
    text = render_prometheus(merge_snapshots([reg.snapshot()]))
    assert metric_value(text, "propylon_requests_by_status_total", status=label) == 1
    assert len(STATUS_SLOTS) < 80


def test_label_values_are_escaped() -> None:
    reg = MetricsRegistry()
    reg.route('g"w', "r\\", "x").record(200, 0.1)
    text = render_prometheus(merge_snapshots([reg.snapshot()]))
    assert 'gateway="g\\"w"' in text and 'route="r\\\\"' in text


def test_access_log_line_is_json_with_escaping() -> None:
    import json
    from types import SimpleNamespace

    from propylon.observability.access_log import format_line

    route = SimpleNamespace(route_label="shop/shop", rule_label="api")
    forwarder = SimpleNamespace(cluster=SimpleNamespace(key="shop/v1"),
                                endpoint_label="127.0.0.1:9001", head_status=200,
                                head_waited=0.00125)
    ex = SimpleNamespace(
        route=route, forwarder=forwarder, client_ip="10.0.0.1",
        method=b"GET", host='we"ird', path=b"/a\\b\xff", status=200, bytes_out=12,
        upstream_error="", proto=SimpleNamespace(proxy_log="", grpc_status=None, http2=False),
        request_id=b"0123abcd-0000-0000-0000-000000000001",
    )
    line = format_line(ex, 0.0015, 1700000000.5)  # type: ignore[arg-type]
    assert line.endswith(b"\n")
    doc = json.loads(line)
    assert doc == {
        "time": 1700000000.5, "request_id": "0123abcd-0000-0000-0000-000000000001",
        "client": "10.0.0.1", "method": "GET", "host": 'we"ird',
        "path": "/a\\b\xff", "status": 200, "bytes": 12, "duration_ms": 1.5,
        "route": "shop/shop", "rule": "api", "upstream": "shop/v1",
        "endpoint": "127.0.0.1:9001", "upstream_status": 200, "upstream_duration_ms": 1.25,
    }
    ex.upstream_error, ex.route, ex.forwarder = "connect failed", None, None
    doc = json.loads(format_line(ex, 0.0, 1.0))  # type: ignore[arg-type]
    assert doc["error"] == "connect failed" and doc["route"] is None


def test_request_totals_count_every_route_and_the_5xx() -> None:
    """What a proxy tallies before each install (requests and 5xx per version, for rollouts)
    is read off the registry, over every route."""
    registry = MetricsRegistry()
    for status, seconds in zip((200, 201, 404, 499, 500, 503, 599, 799),
                               (0.0, 0.01, 0.0005, 3.0, 10.0, 99.0, 1e-9, 0.2), strict=True):
        registry.route("gw/edge", "shop/shop", "api").record(status, seconds)
    registry.route("gw/edge", "shop/other", "x").record(502, 0.01)
    registry.route("gw/edge", "shop/idle", "y")
    assert registry.request_totals() == (9, 5)
    assert MetricsRegistry().request_totals() == (0, 0)
    # the totals are what every route's counters add up to: one answer each, like the codes
    for stats in registry.routes.values():
        assert sum(stats.buckets) == sum(stats.by_code)
    assert sum(sum(s.by_code) for s in registry.routes.values()) == 9


def test_a_rule_has_series_once_a_request_ended_on_it() -> None:
    reg = MetricsRegistry()
    reg.route("gw/edge", "shop/shop", "used").record(200, 0.01)
    reg.route("gw/edge", "shop/shop", "idle")  # compiled, never requested
    text = render_prometheus(merge_snapshots([reg.snapshot()]))
    assert metric_value(text, "propylon_request_duration_seconds_count", rule="used") == 1
    assert 'rule="idle"' not in text
    assert "# TYPE propylon_request_duration_seconds histogram" in text
