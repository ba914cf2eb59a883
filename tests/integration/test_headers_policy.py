"""The headers policy at Gateway, Route (Policy resource) and rule level, and its precedence.

Precedence is per policy type: the most specific level's headers section replaces the others
whole, except a Gateway section with ``enforced: true``, which wins over everything.
Two Gateways in one process serve the same Routes: ``gw`` (plain) and ``enforcer``.
"""

from __future__ import annotations

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import Response
from tests.support.net import free_port
from tests.support.upstream import Reply, ScriptedUpstream

UPSTREAM_HEADERS = [("x-resp", "upstream"), ("x-up-remove", "1"), ("x-up-kept", "1")]


@pytest.fixture(scope="module")
def up(module_upstreams) -> ScriptedUpstream:
    upstream = module_upstreams("hdr")
    upstream.reply(Reply(body=b"ok", headers=UPSTREAM_HEADERS))
    return upstream


@pytest.fixture(scope="module")
def enforcer_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gw(module_gateways, up, enforcer_port) -> Gateway:
    gateway_policy = r.headers_policy(
        request={"set": {"x-level": "gateway"}, "add": {"x-gw": "1"}},
        response={"set": {"x-resp": "gateway"}},
    )
    enforced = {"enforced": True, **r.headers_policy(
        request={"set": {"x-level": "enforced"}}, response={"set": {"x-resp": "enforced"}},
    )}
    return module_gateways(lambda port: r.dump(
        r.gateway(port, policies=[gateway_policy]),
        r.gateway(enforcer_port, name="enforcer", policies=[enforced]),
        r.route("plain", hostnames=["plain.test"], rules=[r.rule(forward=r.forward("hdr"))]),
        r.route("layered", hostnames=["layered.test"], rules=[
            r.rule({"prefix": "/rule"}, name="ruled", forward=r.forward("hdr"), policies=[
                r.headers_policy(
                    request={"set": {"x-level": "rule"}, "add": {"x-rule-tag": "a"}},
                    response={"set": {"x-resp": "rule"}, "add": {"x-resp-add": "r"},
                              "remove": ["x-up-remove"]},
                ),
            ]),
            r.rule(forward=r.forward("hdr")),
        ]),
        r.policy("layered-headers", [{"kind": "Route", "name": "layered"}], **r.headers_policy(
            request={"set": {"x-level": "route"}, "remove": ["x-drop"]},
            response={"set": {"x-resp": "route"}},
        )),
        r.upstream("hdr", up.port),
    ))


CLIENT_HEADERS = {"X-Level": "client", "X-Gw": "client", "X-Drop": "1", "X-Other": "kept"}


def send(port: int, host: str, path: str = "/x") -> Response:
    response = roundtrip(port, "GET", path, CLIENT_HEADERS, host=host)
    assert response.status == 200, response
    return response


def test_gateway_policy_sets_and_adds(gw, up) -> None:
    response = send(gw.port, "plain.test")
    received = up.last
    assert received.head.get_all("x-level") == ["gateway"]  # set replaces the client's value
    assert received.head.get_all("x-gw") == ["client", "1"]  # add keeps it
    assert received.header("x-drop") == "1"
    assert received.header("x-other") == "kept"
    assert response.header_all("x-resp") == ["gateway"]
    assert response.header("x-up-remove") == "1"


def test_route_policy_replaces_the_gateways(gw, up) -> None:
    response = send(gw.port, "layered.test")
    received = up.last
    assert received.head.get_all("x-level") == ["route"]
    assert received.header("x-drop") is None  # removed
    assert received.head.get_all("x-gw") == ["client"]  # the Gateway's section lost whole
    assert response.header_all("x-resp") == ["route"]


def test_rule_policy_replaces_the_routes(gw, up) -> None:
    response = send(gw.port, "layered.test", "/rule")
    received = up.last
    assert received.head.get_all("x-level") == ["rule"]
    assert received.header("x-rule-tag") == "a"
    assert received.header("x-drop") == "1"  # the Route's remove does not apply
    assert response.header_all("x-resp") == ["rule"]
    assert response.header("x-resp-add") == "r"
    assert response.header("x-up-remove") is None
    assert response.header("x-up-kept") == "1"


@pytest.mark.parametrize(
    ("host", "path"),
    [
        pytest.param("plain.test", "/x", id="no-route-policy"),
        pytest.param("layered.test", "/x", id="over-route-policy"),
        pytest.param("layered.test", "/rule", id="over-rule-policy"),
    ],
)
def test_enforced_gateway_policy_wins(gw, up, enforcer_port, host, path) -> None:
    response = send(enforcer_port, host, path)
    received = up.last
    assert received.head.get_all("x-level") == ["enforced"]
    assert received.header("x-rule-tag") is None
    assert received.header("x-drop") == "1"
    assert response.header_all("x-resp") == ["enforced"]
