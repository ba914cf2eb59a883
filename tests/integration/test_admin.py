"""The admin listener (/live, /ready, /config, /metrics, /stats) and the JSON access log."""

from __future__ import annotations

import json
import re
import socket
import struct

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway, metric_value
from tests.support.net import poll_until
from tests.support.upstream import ScriptedUpstream

REQUESTS = 7


@pytest.fixture(scope="module")
def up(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("admin")


@pytest.fixture(scope="module")
def gw(module_gateways, up) -> Gateway:
    gateway = module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("main", hostnames=["admin.test"], rules=[
            r.rule({"prefix": "/api"}, name="api", forward=r.forward("admin")),
            r.rule({"exact": "/teapot"}, name="teapot",
                   directResponse={"status": 418, "body": "short and stout"}),
        ]),
        r.upstream("admin", up.port),
    ))
    for i in range(REQUESTS):
        assert roundtrip(gateway.port, "GET", f"/api/{i}", host="admin.test").status == 200
    assert roundtrip(gateway.port, "GET", "/teapot", host="admin.test").status == 418
    return gateway


@pytest.mark.parametrize("path", [pytest.param("/live", id="live"),
                                  pytest.param("/ready", id="ready")])
def test_health_endpoints(gw, path) -> None:
    assert gw.admin_get(path)[0] == 200


def test_unknown_admin_path_is_404(gw) -> None:
    assert gw.admin_get("/nope")[0] == 404


def test_config_is_the_ir_and_its_version_matches_stats(gw) -> None:
    status, body = gw.admin_get("/config")
    assert status == 200
    document = json.loads(body)
    assert document["version"] == gw.version()
    assert "admin.test" in body.decode()


def test_metrics_count_requests_by_route_and_code(gw) -> None:
    text = gw.metrics()
    labels = {"gateway": "default/gw", "route": "default/main"}
    assert metric_value(text, "propylon_requests_total", rule="api", code="2xx",
                        **labels) == REQUESTS
    assert metric_value(text, "propylon_requests_total", rule="teapot", code="4xx",
                        **labels) == 1


@pytest.mark.parametrize(("rule", "count"), [pytest.param("api", REQUESTS, id="api"),
                                             pytest.param("teapot", 1, id="teapot")])
def test_metrics_latency_histogram_per_route(gw, rule, count) -> None:
    text = gw.metrics()
    name = "propylon_request_duration_seconds"
    assert metric_value(text, f"{name}_count", route="default/main", rule=rule) == count
    assert metric_value(text, f"{name}_bucket", route="default/main", rule=rule,
                        le="+Inf") == count
    buckets = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith(f"{name}_bucket{{") and f'rule="{rule}"' in line
    ]
    assert buckets == sorted(buckets), "histogram buckets must be cumulative"
    assert metric_value(text, f"{name}_sum", route="default/main", rule=rule) > 0
    assert re.search(rf'^# TYPE {name} histogram$', text, re.M)


def test_access_log_has_one_json_line_per_request(gw, up) -> None:
    response = roundtrip(gw.port, "GET", "/api/logged?q=1", host="admin.test")
    assert response.status == 200
    lines = gw.wait_access_log(REQUESTS + 2)
    assert len(lines) == REQUESTS + 2
    line = lines[-1]
    assert line["method"] == "GET"
    assert line["host"] == "admin.test"
    assert line["path"] == "/api/logged"
    assert line["status"] == 200
    assert line["bytes"] == len(response.body)
    assert line["client"] == "127.0.0.1"
    assert isinstance(line["time"], float)
    assert 0 <= line["duration_ms"] < 5000
    assert line["route"] == "default/main"
    assert line["upstream"] == "default/admin"
    assert line["endpoint"] == f"127.0.0.1:{up.port}"
    teapot = next(entry for entry in lines if entry["path"] == "/teapot")
    assert (teapot["status"], teapot["upstream"], teapot["endpoint"]) == (418, None, None)


def _reset_after(port: int, data: bytes) -> None:
    """Connect, send ``data``, then close with an RST instead of a FIN (SO_LINGER 0)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_client_resetting_its_connection_is_logged_at_debug_not_as_an_error(gateways) -> None:
    gw = gateways(lambda port: r.dump(r.gateway(port)), log_level="debug")
    _reset_after(gw.admin_port, b"GET /stats HTTP/1.1\r\nHost: admin\r\n")  # half a head
    poll_until(lambda: "admin client went away" in gw.stderr_text(), 10,
               message="the reset logged at debug")
    assert gw.admin_get("/live")[0] == 200
    log = gw.stderr_text()
    assert "Traceback" not in log and " ERROR " not in log, log
