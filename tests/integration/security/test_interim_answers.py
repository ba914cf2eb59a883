"""Interim 1xx answers to the gateway's own HTTP calls are never taken as the final answer.

Issue #11 item 1: an extAuth service (or a proxy in front of it) that sent ``103 Early Hints``
before its decision made the gateway take 103 as the decision and reuse the connection, so the
next request read the previous request's decision. Each client the gateway has is checked:
extAuth, JWKS, active health checks and the control-plane client.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from propylon.net import httpclient
from propylon.net.httpclient import HttpClient
from tests.support import resources as r
from tests.support.client import RawClient, roundtrip
from tests.support.net import poll_until
from tests.support.upstream import RecordedRequest, Reply


def auth_decision(request: RecordedRequest) -> Reply:
    """Allows /allowed (after a 103), denies everything else."""
    if request.path.startswith("/allowed"):
        return Reply(200, interim=[103], interim_delay=0.05,
                     headers=[("link", "</app.css>; rel=preload")])
    return Reply(403, body=b"denied by the service\n")


def test_ext_auth_reads_past_early_hints(gateways, upstreams) -> None:
    app, auth = upstreams("app"), upstreams("auth")
    auth.handler = auth_decision
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("main", rules=[r.rule(forward=r.forward("app"), policies=[{"extAuth": {
            "url": f"http://127.0.0.1:{auth.port}/", "maxConnections": 1}}])]),
        r.upstream("app", app.port),
    ))
    for _ in range(3):  # one pooled connection to the service, reused every time
        assert roundtrip(gw.port, "GET", "/allowed").status == 200
        denied = roundtrip(gw.port, "GET", "/secret")
        assert denied.status == 403
        assert denied.body == b"denied by the service\n"
    assert [req.path for req in app.requests] == ["/allowed"] * 3
    assert len({req.conn_id for req in auth.requests}) == 1  # the connection was reused


def test_ext_auth_unasked_101_is_an_error(gateways, upstreams) -> None:
    app, auth = upstreams("app"), upstreams("auth")
    auth.reply(Reply(raw=b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"))
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("main", rules=[r.rule(forward=r.forward("app"), policies=[{"extAuth": {
            "url": f"http://127.0.0.1:{auth.port}/"}}])]),
        r.upstream("app", app.port),
    ))
    assert roundtrip(gw.port, "GET", "/x").status == 403  # statusOnError: fail closed
    assert app.requests == []


def test_jwks_client_reads_past_interim_answers(upstreams) -> None:
    """The pooled client under JWKS and extAuth, used directly: 100 and 103 before the
    answer, twice on one connection, each request gets its own answer."""
    server = upstreams("jwks")
    server.handler = lambda req: Reply(
        200, interim=[100, 103], interim_delay=0.05, body=json.dumps({"path": req.path}).encode())

    async def two_requests() -> list[bytes]:
        client = HttpClient(f"http://127.0.0.1:{server.port}", max_connections=1)
        try:
            first = await client.request(b"GET", b"/one", [], 5.0)
            second = await client.request(b"GET", b"/two", [], 5.0)
            return [first.body, second.body]
        finally:
            client.close()

    bodies = asyncio.run(two_requests())
    assert [json.loads(b)["path"] for b in bodies] == ["/one", "/two"]


def test_control_plane_client_reads_past_interim_answers(upstreams) -> None:
    server = upstreams("control")
    server.reply(Reply(200, interim=[103], interim_delay=0.05, body=b'{"version": 7}'))
    answer = asyncio.run(httpclient.request("GET", f"http://127.0.0.1:{server.port}/v1/x"))
    assert answer.status == 200
    assert answer.json() == {"version": 7}


@pytest.mark.parametrize("final, healthy", [(200, True), (503, False)])
def test_health_check_verdict_is_the_final_status(gateways, upstreams, final: int,
                                                  healthy: bool) -> None:
    """A probe answered ``103`` then ``final``: the verdict follows ``final``; with
    ``expectedStatuses: [103]`` a 103 would otherwise pass for healthy."""
    app = upstreams("app")
    app.handler = lambda req: (Reply(final, interim=[103], interim_delay=0.05)
                               if req.path == "/healthz" else Reply(200, body=b"app\n"))
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("main", rules=[r.rule(forward=r.forward("app"))]),
        r.upstream("app", app.port, loadBalancer={"panicThreshold": 0}, healthCheck={"active": {
            "path": "/healthz", "interval": "100ms", "timeout": "1s",
            "unhealthyThreshold": 1, "healthyThreshold": 1,
            "expectedStatuses": [103, 200]}}),
    ))
    poll_until(lambda: len([q for q in app.requests if q.path == "/healthz"]) >= 3)
    expected = 200 if healthy else 503
    poll_until(lambda: roundtrip(gw.port, "GET", "/x").status == expected,
               message=f"answers {expected}")
    with RawClient(gw.port) as client:
        client.request("GET", "/x")
        assert client.read_final().status == expected
