"""X-Forwarded-For/-Proto/-Host and Forwarded: replaced for untrusted peers, extended for
trusted ones (``trustedProxies``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway
from tests.support.upstream import ScriptedUpstream

CLAIMS = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "claimed.example",
    "Forwarded": "for=203.0.113.7;proto=https",
}
FORWARDING = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"]


@pytest.fixture(scope="module")
def up(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("fwd")


def config(up: ScriptedUpstream, **gateway_spec: Any) -> Callable[[int], str]:
    return lambda port: r.dump(
        r.gateway(port, **gateway_spec),
        r.route("main", rules=[r.rule(forward=r.forward("fwd"))]),
        r.upstream("fwd", up.port),
    )


@pytest.fixture(scope="module")
def untrusting(module_gateways, up) -> Gateway:
    return module_gateways(config(up))


@pytest.fixture(scope="module")
def trusting(module_gateways, up) -> Gateway:
    return module_gateways(config(up, trustedProxies=["127.0.0.0/8"]))


def forwarded_fields(up: ScriptedUpstream) -> dict[str, list[str]]:
    head = up.last.head
    return {name: head.get_all(name) for name in FORWARDING}


@pytest.mark.parametrize(
    "claims", [pytest.param(CLAIMS, id="with-claims"), pytest.param({}, id="without-claims")]
)
def test_untrusted_client_claims_are_replaced(untrusting, up, claims) -> None:
    up.reset()
    assert roundtrip(untrusting.port, "GET", "/f", claims, host="real.test").status == 200
    assert forwarded_fields(up) == {
        "x-forwarded-for": ["127.0.0.1"],
        "x-forwarded-proto": ["http"],
        "x-forwarded-host": ["real.test"],
        "forwarded": ["for=127.0.0.1;proto=http;host=real.test"],
    }


def test_trusted_proxy_chain_is_appended(trusting, up) -> None:
    up.reset()
    assert roundtrip(trusting.port, "GET", "/f", CLAIMS, host="real.test").status == 200
    assert forwarded_fields(up) == {
        "x-forwarded-for": ["203.0.113.7, 127.0.0.1"],
        "x-forwarded-proto": ["https"],
        "x-forwarded-host": ["claimed.example"],
        "forwarded": ["for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=real.test"],
    }
    line = trusting.wait_access_log(1)[-1]
    assert line["client"] == "203.0.113.7"


def test_trusted_proxy_without_claims_starts_the_chain(trusting, up) -> None:
    up.reset()
    assert roundtrip(trusting.port, "GET", "/f", host="real.test").status == 200
    assert forwarded_fields(up)["x-forwarded-for"] == ["127.0.0.1"]
    assert forwarded_fields(up)["forwarded"] == ["for=127.0.0.1;proto=http;host=real.test"]


def test_a_port_in_x_forwarded_for_names_the_same_client(gateways, up) -> None:
    """Some proxies write the client's port too (192.0.2.1:4711, [2001:db8::1]:4711): the
    port must not make one client many (a per-address rate limit bypassed by changing ports)
    nor hide a trusted proxy; a hop that is no address leaves the client the last one read."""
    limited = {"rateLimit": {"limits": [{"requests": 2, "per": "1h", "key": ["client_ip"]}]}}
    gw = gateways(lambda port: r.dump(
        r.gateway(port, trustedProxies=["127.0.0.0/8"]),
        r.route("main", rules=[r.rule(forward=r.forward("fwd"), policies=[limited])]),
        r.upstream("fwd", up.port),
    ))
    statuses = [roundtrip(gw.port, "GET", "/p", [("X-Forwarded-For", f"203.0.113.5:{1000 + i}")]
                          ).status for i in range(4)]
    assert statuses == [200, 200, 429, 429]
    # a trusted hop written with a port is still a trusted proxy, skipped
    chain = "198.51.100.8, 127.0.0.9:8080"
    assert roundtrip(gw.port, "GET", "/t", [("X-Forwarded-For", chain)]).status == 200
    assert roundtrip(gw.port, "GET", "/u", [("X-Forwarded-For", "[2001:DB8::7]:443")]
                     ).status == 200
    clients = {line["path"]: line["client"] for line in gw.wait_access_log(6)}
    assert clients["/t"] == "198.51.100.8"
    assert clients["/u"] == "2001:db8::7"
    assert roundtrip(gw.port, "GET", "/g", [("X-Forwarded-For", "not-an-address")]).status == 200
    clients = {line["path"]: line["client"] for line in gw.wait_access_log(7)}
    assert clients["/g"] == "127.0.0.1"  # the trusted peer: no text a filter cannot match
