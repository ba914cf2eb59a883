"""The proxy's /metrics over a real gateway with two workers: the series added to today's
(status codes, upstream response time, body bytes, denials by policy, connections and
requests in flight, configuration, certificate expiry, process_*/python_* per process),
OpenMetrics on request, and a number of series that requests cannot grow."""

from __future__ import annotations

import random
import re
import socket
import string
import time

import pytest

from tests.support.client import RawClient, roundtrip
from tests.support.gateway import Gateway, metric_value
from tests.support.net import poll_until
from tests.support.observed import HOST, answer_by_path, drive_traffic, observed_config
from tests.support.tls import Pki
from tests.support.upstream import RecordedRequest, Reply, ScriptedUpstream

RULE = {"gateway": "default/gw", "route": "default/shop"}
UPSTREAM = {"gateway": "default/gw", "upstream": "default/catalog"}


@pytest.fixture(scope="module")
def up(module_upstreams) -> ScriptedUpstream:
    upstream = module_upstreams("catalog")
    upstream.reset(answer_by_path)
    return upstream


@pytest.fixture(scope="module")
def gw(module_gateways, up, tmp_path_factory) -> Gateway:
    cert = Pki(tmp_path_factory.mktemp("pki")).issue("site", "shop.test")
    gateway = module_gateways(observed_config(up.port, cert), workers=2)
    drive_traffic(gateway.port)
    return gateway


def series(text: str) -> set[str]:
    """Every sample's name and labels (not its value)."""
    return {line.rpartition(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


@pytest.mark.parametrize(("rule", "status"), [
    pytest.param("api", "200", id="ok"),
    pytest.param("api", "404", id="upstream-404"),
    pytest.param("api", "503", id="upstream-503"),
    pytest.param("teapot", "418", id="direct-response"),
    pytest.param("limited", "429", id="rate-limited"),
    pytest.param("private", "401", id="no-api-key"),
])
def test_requests_are_counted_by_exact_status(gw, rule, status) -> None:
    text = gw.metrics()
    assert metric_value(text, "propylon_requests_by_status_total", rule=rule, status=status,
                        **RULE) >= 1
    # today's series by class is still there
    assert metric_value(text, "propylon_requests_total", rule=rule, code=status[0] + "xx",
                        **RULE) >= 1


def test_upstream_responses_by_status_and_response_time(gw) -> None:
    text = gw.metrics()
    for status in ("200", "404", "503"):
        assert metric_value(text, "propylon_upstream_responses_by_status_total",
                            status=status, **UPSTREAM) >= 1
    forwarded = metric_value(text, "propylon_upstream_responses_total", **UPSTREAM)
    name = "propylon_upstream_response_seconds"
    assert metric_value(text, f"{name}_count", **UPSTREAM) == forwarded
    assert metric_value(text, f"{name}_bucket", le="+Inf", **UPSTREAM) == forwarded
    assert 0 < metric_value(text, f"{name}_sum", **UPSTREAM) < forwarded * 5


def test_body_bytes_both_ways(gw) -> None:
    text = gw.metrics()
    assert metric_value(text, "propylon_request_body_bytes_total", rule="api", **RULE) >= 1000
    assert metric_value(text, "propylon_response_body_bytes_total", rule="teapot",
                        **RULE) >= len("short and stout")


@pytest.mark.parametrize(("rule", "policy_type", "status"), [
    pytest.param("limited", "rateLimit", "429", id="rate-limit"),
    pytest.param("private", "apiKey", "401", id="api-key"),
])
def test_denials_by_policy(gw, rule, policy_type, status) -> None:
    text = gw.metrics()
    assert metric_value(text, "propylon_policy_denials_total", rule=rule, type=policy_type,
                        status=status, policy=f"Route default/shop rule {rule}", **RULE) >= 1


def test_connections_and_requests_in_flight(gw, up) -> None:
    listener = f"127.0.0.1:{gw.port}"
    idle = metric_value(gw.metrics(), "propylon_client_connections", listener=listener)
    def slow(request: RecordedRequest) -> Reply:
        return Reply(delay=3) if "slow" in request.path else answer_by_path(request)

    up.reset(slow)
    try:
        with RawClient(gw.port) as client:
            client.request("GET", "/api/slow", host=HOST)
            text = poll_until(
                lambda: (t := gw.metrics()) and metric_value(
                    t, "propylon_requests_in_flight", listener=listener) >= 1 and t,
                5, message="a request in flight")
            assert metric_value(text, "propylon_client_connections",
                                listener=listener) >= idle + 1
            assert metric_value(text, "propylon_upstream_requests_in_flight", **UPSTREAM) >= 1
            client.read_final("GET")
    finally:
        up.reset(answer_by_path)


def test_configuration_series(gw) -> None:
    text = gw.metrics()
    assert metric_value(text, "propylon_config_info", version=gw.version()) == 1
    assert metric_value(text, "propylon_config_last_reload_successful") == 1
    installed = metric_value(text, "propylon_config_installed_timestamp_seconds")
    assert time.time() - 600 < installed <= time.time()
    assert metric_value(text, "propylon_workers") == 2


def test_certificate_expiry_of_the_https_listener(gw) -> None:
    text = gw.metrics()
    expiry = metric_value(text, "propylon_tls_certificate_expiry_timestamp_seconds")
    assert expiry > time.time() + 86400  # trustme certificates are valid for years


@pytest.mark.parametrize("worker", ["supervisor", "0", "1"])
def test_process_and_python_series_per_process(gw, worker) -> None:
    text = gw.metrics()
    assert metric_value(text, "process_resident_memory_bytes", worker=worker) > 0
    assert metric_value(text, "process_cpu_seconds_total", worker=worker) > 0
    assert metric_value(text, "python_gc_collections_total", worker=worker,
                        generation="0") >= 0
    assert re.search(rf'^python_info{{.*worker="{worker}"', text, re.M)


def test_openmetrics_when_the_scraper_asks(gw) -> None:
    with socket.create_connection(("127.0.0.1", gw.admin_port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nAccept: "
                     b"application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/openmetrics-text" in head.lower()
    assert body.rstrip().endswith(b"# EOF")
    assert b"# TYPE propylon_requests counter" in body
    # the plain format stays the default
    status, plain = gw.admin_get("/metrics")
    assert status == 200 and b"# EOF" not in plain


def _random_token(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(size))


def test_requests_cannot_grow_the_number_of_series(gw) -> None:
    """Labels come from configuration only: random paths, hosts, methods, headers and
    request ids leave the set of series as it was (statuses seen before included)."""
    drive_traffic(gw.port)  # every status this test can cause has been seen
    before = series(gw.metrics())
    rng = random.Random(16)
    for _ in range(60):
        token = _random_token(rng, 12)
        headers = {f"x-{_random_token(rng, 6)}": token, "x-request-id": token,
                   "user-agent": token}
        host = rng.choice([HOST, f"{token}.test"])
        path = rng.choice(["/api/", "/", "/teapot/", "/private/"]) + token
        roundtrip(gw.port, rng.choice(["GET", "DELETE", "PATCH"]), f"{path}?{token}=1",
                  headers, host=host)
    after = series(gw.metrics())
    grown = {s for s in after - before if not s.startswith(("process_", "python_"))}
    assert not grown, sorted(grown)
    assert len(after) == len(before)
