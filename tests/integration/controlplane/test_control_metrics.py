"""The control plane's /healthz and /metrics (#16 item 6): open without the token while
everything else still needs it; per-Gateway versions, proxies, ACK/NACK and propagation,
with label values only from configured Gateways."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from propylon.controlplane.metrics import ControlMetrics
from tests.integration.controlplane.conftest import Cluster, ControlPlane
from tests.integration.controlplane.helpers import (
    free_port,
    gateway,
    http,
    route,
    served_by,
    upstream,
    wait_until,
)

GW = "infra/edge"


def _samples(plane: ControlPlane) -> list[Any]:
    status, text = http("GET", plane.url + "/metrics")  # no token
    assert status == 200, text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(plane: ControlPlane, name: str, **labels: str) -> float | None:
    for sample in _samples(plane):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


def _served_version(plane: ControlPlane) -> str | None:
    fleet = [g for g in plane.get("/v1/status")[1]["gateways"] if g["gateway"] == GW]
    return fleet[0]["version"] if fleet else None


@pytest.fixture(scope="module")
def open_plane(module_cluster: Cluster) -> ControlPlane:
    """A control plane past its start (/healthz says ok), shared by requests that change
    nothing (all refused)."""
    plane = module_cluster.control()
    wait_until(lambda: http("GET", plane.url + "/healthz")[1] == {"status": "ok"},
               what="/healthz to say ok")
    return plane


@pytest.mark.parametrize(("method", "path"), [
    pytest.param("GET", "/openapi.json", id="openapi"),
    pytest.param("GET", "/v1/status", id="status"),
    pytest.param("GET", "/v1/resources/route", id="list"),
    pytest.param("PUT", "/v1/resources/route/a/b", id="put"),
    pytest.param("POST", "/v1/apply", id="apply"),
    pytest.param("GET", "/v1/gateways/infra/edge/ir", id="poll"),
    pytest.param("POST", "/v1/gateways/infra/edge/reports", id="report"),
    pytest.param("POST", "/metrics", id="metrics-post"),
])
def test_only_healthz_and_metrics_are_open(open_plane: ControlPlane, method: str,
                                          path: str) -> None:
    plane = open_plane
    assert http("GET", plane.url + "/healthz")[1] == {"status": "ok"}
    assert http("GET", plane.url + "/healthz", token="wrong")[0] == 200
    assert http("GET", plane.url + "/metrics")[0] == 200
    expected = 405 if path == "/metrics" else 401
    assert http(method, plane.url + path, {})[0] == expected
    assert http(method, plane.url + path, {}, token="wrong")[0] == expected


def test_versions_proxies_acks_nacks_and_propagation(cluster: Cluster) -> None:
    plane = cluster.control()
    port, echo = free_port(), cluster.echo("svc")
    for resource in [gateway("edge", "infra", port, ["shop"]), upstream("svc", "shop", echo),
                     route("main", "shop", "/", "svc")]:
        plane.must_put(resource)
    cluster.proxy("proxy", plane, GW)
    wait_until(lambda: served_by(port, "/") == (200, "svc"), what="the proxy to serve")
    wait_until(lambda: _value(plane, "propylon_control_proxies_current", gateway=GW) == 1,
               what="the proxy to count as current")
    version = _served_version(plane)
    assert _value(plane, "propylon_control_gateway_version_info", gateway=GW,
                  version=version or "") == 1
    assert _value(plane, "propylon_control_proxies_connected", gateway=GW) == 1
    assert (_value(plane, "propylon_control_proxy_reports_total", gateway=GW, result="ACK")
            or 0) >= 1
    assert _value(plane, "propylon_control_ready") == 1
    published = _value(plane, "propylon_control_gateway_versions_total", gateway=GW) or 0

    plane.must_put(route("extra", "shop", "/extra", "svc"))  # propagates to a connected proxy
    wait_until(lambda: _value(plane, "propylon_control_propagation_seconds_count",
                              gateway=GW) == 1, what="a propagation sample")
    assert (_value(plane, "propylon_control_propagation_seconds_bucket", gateway=GW,
                   le="+Inf")) == 1
    assert _value(plane, "propylon_control_gateway_versions_total",
                  gateway=GW) == published + 1

    plane.must_put(gateway("edge", "infra", echo, ["shop"]))  # a port the proxy cannot take
    wait_until(lambda: (_value(plane, "propylon_control_proxy_reports_total", gateway=GW,
                               result="NACK") or 0) >= 1, timeout=20, what="a NACK counted")
    assert _value(plane, "propylon_control_proxies_current", gateway=GW) == 0


def test_label_values_never_come_from_requests(cluster: Cluster) -> None:
    plane = cluster.control()
    plane.must_put(gateway("edge", "infra", free_port(), ["shop"]))
    wait_until(lambda: _value(plane, "propylon_control_gateway_versions_total", gateway=GW),
               what="the Gateway's series")
    for gw in ("infra/edge", "nope/evil-gateway"):
        http("GET", f"{plane.url}/v1/gateways/{gw}/ir?wait=0&proxy=evil-proxy&version=evil-v"
             "&schemas=2,3",
             token=plane.token)
        http("POST", f"{plane.url}/v1/gateways/{gw}/reports",
             {"proxy": "evil-proxy", "version": "evil-version", "result": "NACK"}, plane.token)
    labels = {v for s in _samples(plane) for v in s.labels.values()}
    assert not {v for v in labels if "evil" in v}, labels
    assert _value(plane, "propylon_control_proxy_reports_total", gateway=GW,
                  result="NACK") == 1

    plane.must_put(gateway("other", "infra", free_port(), ["shop"]))
    http("DELETE", f"{plane.url}/v1/resources/gateway/infra/edge", token=plane.token)
    wait_until(lambda: _value(plane, "propylon_control_gateway_versions_total",
                              gateway=GW) is None, what="the deleted Gateway's series to go")
    assert _value(plane, "propylon_control_gateway_versions_total", gateway="infra/other") == 1


def test_openmetrics_when_the_scraper_asks(cluster: Cluster) -> None:
    plane = cluster.control()
    request = urllib.request.Request(
        plane.url + "/metrics", headers={"accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.headers["content-type"].startswith("application/openmetrics-text")
        assert answer.read().rstrip().endswith(b"# EOF")


def test_a_scraper_may_ask_for_some_metrics_only(cluster: Cluster) -> None:
    """``?name[]=``, as Prometheus's own exposition servers take it: those series only (a
    scraper polling for versions does not pay for every histogram of every Gateway)."""
    plane = cluster.control()
    plane.must_put(gateway("edge", "infra", free_port(), ["shop"]))
    wait_until(lambda: _value(plane, "propylon_control_gateway_version_info", gateway=GW),
               what="a version")
    names = ("propylon_control_gateway_version_info", "propylon_control_applies_total")
    status, text = http("GET", plane.url + "/metrics?" + "&".join(f"name[]={n}" for n in names))
    assert status == 200, text
    got = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    assert got == set(names), text
    assert "process_cpu_seconds_total" not in text and "_bucket" not in text
    assert "process_cpu_seconds_total" in http("GET", plane.url + "/metrics")[1]


def test_a_proxy_that_connects_later_is_not_a_propagation_sample() -> None:
    metrics = ControlMetrics(connected_for=50.0)
    metrics.polled(GW, "early", "")  # unknown Gateway yet: not tracked
    metrics.published(GW, "v1")
    metrics.polled(GW, "old", "v1")
    metrics.published(GW, "v2")
    metrics.polled(GW, "late", "")  # connected after v2 was published
    metrics.reported(GW, "late", "v2", "ACK")
    metrics.reported(GW, "old", "v2", "ACK")
    metrics.reported(GW, "old", "v2", "ACK")  # a repeated ACK is one sample
    body, _ = metrics.render([], ready=True)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    assert samples[("propylon_control_propagation_seconds_count", (("gateway", GW),))] == 1
    assert samples[("propylon_control_proxy_reports_total",
                    (("gateway", GW), ("result", "ACK")))] == 3
