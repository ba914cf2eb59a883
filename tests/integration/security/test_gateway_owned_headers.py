"""Headers the gateway owns are never taken from an untrusted client (issue #11 item 3).

``x-consumer-name`` / ``x-consumer-labels`` tell an upstream who the client is, as the
gateway's auth policies found out. A client of a route without such a policy used to pass
its own copies through (``x-consumer-name: admin``); they are now dropped unless the peer is
a trusted proxy (a first tier that authenticated the client), whatever the route.
"""

from __future__ import annotations

from tests.support import resources as r
from tests.support.client import roundtrip


def test_forged_consumer_headers_dropped_from_untrusted_clients(gateways, upstreams) -> None:
    app = upstreams("app")
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("open", rules=[r.rule(forward=r.forward("app"))]),
        r.upstream("app", app.port),
    ))
    forged = [("x-consumer-name", "admin"), ("X-Consumer-Labels", "tier=gold"), ("x-kept", "1")]
    assert roundtrip(gw.port, "GET", "/", forged).status == 200
    names = app.last.head.names()
    assert "x-consumer-name" not in names and "x-consumer-labels" not in names
    assert app.last.header("x-kept") == "1"


def test_consumer_headers_kept_from_a_trusted_first_tier(gateways, upstreams) -> None:
    app = upstreams("app")
    gw = gateways(lambda port: r.dump(
        r.gateway(port, trustedProxies=["127.0.0.1/32"]),
        r.route("open", rules=[r.rule(forward=r.forward("app"))]),
        r.upstream("app", app.port),
    ))
    told = [("x-consumer-name", "mobile-app"), ("x-consumer-labels", "tier=gold")]
    assert roundtrip(gw.port, "GET", "/", told).status == 200
    assert app.last.header("x-consumer-name") == "mobile-app"
    assert app.last.header("x-consumer-labels") == "tier=gold"
