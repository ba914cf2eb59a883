"""``Expect: 100-continue``: the gateway answers 100 itself before the body is sent and does
not forward Expect; upstream interim answers are not forwarded; a locally answered request
gets its final answer and no 100.
"""

from __future__ import annotations

import pytest

from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway
from tests.support.h1 import build_request
from tests.support.upstream import Reply, ScriptedUpstream


@pytest.fixture(scope="module")
def main_up(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("main")


@pytest.fixture(scope="module")
def gw(module_gateways, main_up: ScriptedUpstream) -> Gateway:
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("main", hostnames=["test.local"], rules=[r.rule(forward=r.forward("main"))]),
        r.upstream("main", main_up.port),
    ))


@pytest.fixture
def up(gw: Gateway, main_up: ScriptedUpstream) -> ScriptedUpstream:
    main_up.reset()
    return main_up


EXPECT = [("Expect", "100-continue"), ("Content-Length", "5")]


def test_gateway_sends_100_before_the_body_and_drops_expect(gw, up) -> None:
    with RawClient(gw.port, timeout=5) as client:
        client.send(build_request("POST", "/upload", EXPECT))  # the head only
        interim = client.read_response("POST")
        assert (interim.status, interim.reason) == (100, "Continue"), interim
        assert up.requests == []  # nothing answered for the upstream yet
        client.send(b"hello")
        final = client.read_final("POST")
        assert final.status == 200 and final.interim == [], final
    received = up.last
    assert received.body == b"hello"
    assert received.header("expect") is None


@pytest.mark.parametrize(("headers", "interim_count"), [
    pytest.param(EXPECT, 1, id="with-expect-only-the-gateways-100"),
    pytest.param([("Content-Length", "5")], 0, id="without-expect-no-100"),
])
def test_upstream_interim_answers_are_not_forwarded(gw, up, headers, interim_count) -> None:
    up.handler = lambda q: Reply(body=q.body, interim=[100, 100])
    with RawClient(gw.port, timeout=5) as client:
        client.send(build_request("POST", "/interim", headers, b"hello"))
        final = client.read_final("POST")
        assert final.status == 200 and final.body == b"hello", final
        assert [i.status for i in final.interim] == [100] * interim_count, final.interim
        client.request("GET", "/next")  # the connection is still in step
        assert client.read_final().status == 200


def test_locally_answered_request_gets_no_100(gw, up) -> None:
    with RawClient(gw.port, timeout=5) as client:
        client.send(build_request("POST", "/upload", EXPECT, host="nowhere.example"))
        first = client.read_response("POST")
        assert first.status == 404, first
        assert client.closed_by_peer(3), "unread body: the connection must close"
    assert up.requests == []
