"""Active gRPC health checks (#13 item 4: ``grpc.health.v1.Health/Check``): a real grpcio
server whose health service answers SERVING or NOT_SERVING on demand (a generic handler on raw
bytes, so no grpcio-health-checking package is needed); the gateway's verdict follows it and
traffic goes only to the healthy endpoint. Also the probe's message encoding, and the
validation error for a grpc check on an HTTP/1.1 Upstream."""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
import pytest

from propylon.net.grpc_health import SERVING, request_message, serving_status
from tests.support import resources as r
from tests.support.gateway import Gateway
from tests.support.net import poll_until


class HealthServer:
    def __init__(self) -> None:
        self.serving = True
        self.services_asked: list[bytes] = []

        def check(request: bytes, context: Any) -> bytes:
            self.services_asked.append(request)
            return b"\x08\x01" if self.serving else b"\x08\x02"  # SERVING / NOT_SERVING

        handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(check)})
        self.executor = futures.ThreadPoolExecutor(max_workers=2)
        self.server = grpc.server(self.executor, handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        """The server, then its threads (none left for the next test in this process)."""
        self.server.stop(grace=None).wait(10)
        self.executor.shutdown(wait=True)


@pytest.fixture
def servers() -> Any:
    pair = HealthServer(), HealthServer()
    yield pair
    for server in pair:
        server.stop()


def endpoint_health(gw: Gateway, port: int) -> bool | None:
    for ep in gw.stats()["endpoints"]:
        if ep["upstream"] == "default/grpc" and ep["endpoint"].endswith(f":{port}"):
            return bool(ep["healthy"])
    return None


def test_verdicts_follow_the_grpc_health_service(gateways, servers) -> None:
    a, b = servers
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("grpc", rules=[r.rule(forward=r.forward("grpc"))]),
        r.upstream("grpc", a.port, b.port, protocol="HTTP2", healthCheck={"active": {
            "type": "grpc", "service": "propylon.test.Echo", "interval": "200ms",
            "intervalJitter": "20ms", "timeout": "500ms", "healthyThreshold": 2,
            "unhealthyThreshold": 2}}),
    ))
    poll_until(lambda: a.services_asked and b.services_asked, timeout=10)
    assert a.services_asked[-1] == b"\x0a\x12propylon.test.Echo"
    b.serving = False
    poll_until(lambda: endpoint_health(gw, b.port) is False, timeout=10,
               message="the NOT_SERVING endpoint marked unhealthy")
    assert endpoint_health(gw, a.port) is True
    b.serving = True
    poll_until(lambda: endpoint_health(gw, b.port) is True, timeout=10,
               message="the endpoint healthy again")
    b.stop()  # no answer at all: unhealthy too
    poll_until(lambda: endpoint_health(gw, b.port) is False, timeout=10)


def test_message_encoding() -> None:
    assert request_message("") == b"\x00\x00\x00\x00\x00"
    assert request_message("a.B") == b"\x00\x00\x00\x00\x05\x0a\x03a.B"
    assert serving_status(b"\x00\x00\x00\x00\x02\x08\x01") == SERVING
    assert serving_status(b"\x00\x00\x00\x00\x00") == 0  # proto3: UNKNOWN is absent
    assert serving_status(b"\x01\x00\x00\x00\x00") is None  # compressed: not ours


def test_grpc_check_needs_an_http2_upstream(tmp_path) -> None:
    import subprocess
    import sys
    config = tmp_path / "bad.yaml"
    config.write_text(r.dump(r.gateway(8080), r.route("x", rules=[r.rule(forward=r.forward("u"))]),
                             r.upstream("u", 9000, healthCheck={"active": {"type": "grpc"}})))
    out = subprocess.run([sys.executable, "-m", "propylon", "validate", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "needs protocol: HTTP2" in out.stdout + out.stderr
