"""An HTTPRoute attached to a Gateway API listener by ``parentRefs[].sectionName`` or
``port`` is served on that listener only, by a real gateway (``propylon run``) to real
upstreams: the conformance suite's HTTPRouteListenerPortMatching,
HTTPRouteListenerHostnameMatching and GatewayHTTPListenerIsolation (both of its Gateways),
ported with their requests and expected answers, the parentRefs that match no listener
(NoMatchingParent), and ``propylon explain`` giving the rule the gateway answers with."""

from __future__ import annotations

import json

import pytest

from propylon.explain import explain
from propylon.standalone import build_snapshot
from tests.support.client import roundtrip
from tests.support.gateway import Gateway
from tests.support.net import free_port
from tests.support.upstream import ScriptedUpstream

NS = "gateway-conformance-infra"
PORT_8080 = free_port()  # the suite's ports 8080 and 8090 (its port 80 is the gateway's own)
PORT_8090 = free_port()
HOSTNAMES_PORT = free_port()  # HTTPRouteListenerHostnameMatching's Gateway
ISOLATION_PORT = free_port()  # GatewayHTTPListenerIsolation's two Gateways
INTERSECTION_PORT = free_port()


def _gateway(name: str, listeners: str) -> str:
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {NS}}}
spec:
  gatewayClassName: propylon
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:{listeners}"""


def _listener(name: str, port: int, hostname: str | None = None, allowed: str = "Same") -> str:
    host = f", hostname: {hostname!r}" if hostname else ""
    return (f"\n  - {{name: {name}, port: {port}, protocol: HTTP{host}, "
            f"allowedRoutes: {{namespaces: {{from: {allowed}}}}}}}")


def _route(name: str, gateway: str, refs: list[str], backend: str, path: str | None = None,
           hostnames: list[str] | None = None) -> str:
    parent_refs = "".join(f"\n  - {{name: {gateway}, namespace: {NS}{ref}}}" for ref in refs)
    matches = f"\n    matches: [{{path: {{type: PathPrefix, value: {path}}}}}]" if path else ""
    hosts = f"\n  hostnames: {json.dumps(hostnames)}" if hostnames else ""
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs:{parent_refs}{hosts}
  rules:
  - backendRefs: [{{name: infra-backend-{backend}, port: 8080}}]{matches}"""


ISOLATION_HOSTNAMES = {  # each isolation listener, and the hostnames its intersecting route has
    "empty-hostname": (None, ["bar.com", "*.example.com", "*.foo.example.com",
                              "abc.foo.example.com"]),
    "wildcard-example-com": ("*.example.com", ["bar.com", "*.example.com",
                                               "*.foo.example.com", "abc.foo.example.com"]),
    "wildcard-foo-example-com": ("*.foo.example.com", ["bar.com", "*.example.com",
                                                       "*.foo.example.com",
                                                       "abc.foo.example.com"]),
    "abc-foo-example-com": ("abc.foo.example.com", ["bar.com", "*.example.com",
                                                    "*.foo.example.com",
                                                    "abc.foo.example.com"]),
}


def _isolation(gateway: str, port: int, intersecting: bool) -> str:
    listeners = "".join(_listener(name, port, hostname, "All")
                        for name, (hostname, _) in ISOLATION_HOSTNAMES.items())
    routes = "".join(
        _route(f"{port}-attaches-to-{name}", gateway, [f", sectionName: {name}"], "v1",
               f"/{name}",
               hostnames if intersecting else None)
        for name, (_, hostnames) in ISOLATION_HOSTNAMES.items())
    return _gateway(gateway, listeners) + routes


def config(port: int, ups: dict[str, ScriptedUpstream]) -> str:
    upstreams = "".join(f"""
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: infra-backend-{name}, namespace: {NS}}}
spec: {{endpoints: [{{address: 127.0.0.1, port: {ups[name].port}}}]}}""" for name in ups)
    port_matching = _gateway("httproute-listener-port-matching", "".join([
        _listener("listener-1", port, "foo.com"),
        _listener("listener-2", PORT_8080, "foo.com"),
        _listener("listener-3", PORT_8080, "bar.com"),
        _listener("listener-4", PORT_8090, "foo.com"),
        _listener("listener-5", PORT_8090, "bar.com"),
    ])) + "".join([
        _route("backend-v1", "httproute-listener-port-matching", [f", port: {port}"], "v1"),
        _route("backend-v2", "httproute-listener-port-matching", [f", port: {PORT_8080}"],
               "v2"),
        _route("backend-v3", "httproute-listener-port-matching",
               [f", port: {PORT_8090}, sectionName: listener-4"], "v3"),
        # NoMatchingParent: no listener on that port, no listener of that name, a listener
        # of that name on another port
        _route("no-such-port", "httproute-listener-port-matching", [", port: 81"], "v1"),
        _route("no-such-section", "httproute-listener-port-matching",
               [f", port: {port}, sectionName: http1"], "v1"),
        _route("section-on-another-port", "httproute-listener-port-matching",
               [", sectionName: listener-1, port: 81"], "v1"),
    ])
    hostname_matching = _gateway("httproute-listener-hostname-matching", "".join([
        _listener("listener-1", HOSTNAMES_PORT, "bar.com"),
        _listener("listener-2", HOSTNAMES_PORT, "foo.bar.com"),
        _listener("listener-3", HOSTNAMES_PORT, "*.bar.com"),
        _listener("listener-4", HOSTNAMES_PORT, "*.foo.com"),
    ])) + "".join([
        _route("hostname-v1", "httproute-listener-hostname-matching",
               [", sectionName: listener-1"], "v1"),
        _route("hostname-v2", "httproute-listener-hostname-matching",
               [", sectionName: listener-2"], "v2"),
        _route("hostname-v3", "httproute-listener-hostname-matching",
               [", sectionName: listener-3", ", sectionName: listener-4"], "v3"),
    ])
    return (port_matching.lstrip("\n-") + hostname_matching
            + _isolation("http-listener-isolation", ISOLATION_PORT, False)
            + _isolation("http-listener-isolation-with-hostname-intersection",
                         INTERSECTION_PORT, True)
            + upstreams + "\n")


@pytest.fixture(scope="module")
def ups(module_upstreams) -> dict[str, ScriptedUpstream]:
    return {name: module_upstreams(name) for name in ("v1", "v2", "v3")}


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    return module_gateways(lambda port: config(port, ups))


def _answer(port: int, host: str, target: str) -> str:
    """The upstream that answered, or the gateway's status when none did."""
    response = roundtrip(port, "GET", target, host=host)
    if response.status == 200 and response.header("x-upstream"):
        return str(response.header("x-upstream"))
    return str(response.status)


@pytest.mark.parametrize(("listener", "host", "expected"), [
    pytest.param("80", "foo.com", "v1", id="foo.com:80"),
    pytest.param("8080", "foo.com", "v2", id="foo.com:8080"),
    pytest.param("8080", "bar.com", "v2", id="bar.com:8080"),
    pytest.param("8090", "foo.com", "v3", id="foo.com:8090"),
    pytest.param("8090", "bar.com", "404", id="bar.com:8090"),
])
def test_listener_port_matching(gw, listener: str, host: str, expected: str) -> None:
    port = {"80": gw.port, "8080": PORT_8080, "8090": PORT_8090}[listener]
    assert _answer(port, host, "/") == expected


@pytest.mark.parametrize(("host", "expected"), [
    ("bar.com", "v1"),
    ("foo.bar.com", "v2"),
    ("baz.bar.com", "v3"),
    ("boo.bar.com", "v3"),
    ("multiple.prefixes.bar.com", "v3"),
    ("multiple.prefixes.foo.com", "v3"),
    ("foo.com", "404"),
    ("no.matching.host", "404"),
])
def test_listener_hostname_matching(gw, host: str, expected: str) -> None:
    assert _answer(HOSTNAMES_PORT, host, "/") == expected


# host -> the one path served there (the route attached to the listener the host belongs to)
ISOLATION = {
    "bar.com": "/empty-hostname",
    "bar.example.com": "/wildcard-example-com",
    "bar.foo.example.com": "/wildcard-foo-example-com",
    "abc.foo.example.com": "/abc-foo-example-com",
}


@pytest.mark.parametrize("port", [
    pytest.param(ISOLATION_PORT, id="hostnames-in-listeners-only"),
    pytest.param(INTERSECTION_PORT, id="intersecting-hostnames"),
])
@pytest.mark.parametrize("host", list(ISOLATION))
def test_listener_isolation(gw, port: int, host: str) -> None:
    answers = {path: _answer(port, host, path) for path in ISOLATION.values()}
    assert answers == {path: "v1" if path == ISOLATION[host] else "404"
                       for path in ISOLATION.values()}


def test_route_statuses_per_parent_ref(gw) -> None:
    status, body = gw.admin_get("/config")
    assert status == 200, body
    statuses = {f"{s['kind']} {s['key']}": s for s in json.loads(body)["statuses"]}
    gateway = f"parent Gateway {NS}/httproute-listener-port-matching"
    v3 = statuses[f"HTTPRoute {NS}/backend-v3"]
    assert v3["state"] == "Accepted"
    assert f"{gateway} sectionName listener-4 port {PORT_8090}: Accepted=True Accepted" \
        in v3["reasons"], v3
    for name, scope in [("no-such-port", f"{gateway} port 81"),
                        ("no-such-section", f"{gateway} sectionName http1 port {gw.port}"),
                        ("section-on-another-port", f"{gateway} sectionName listener-1 port 81")]:
        route = statuses[f"HTTPRoute {NS}/{name}"]
        assert route["state"] == "Invalid", route
        assert any(r.startswith(f"{scope}: Accepted=False NoMatchingParent") for r in
                   route["reasons"]), route
    assert statuses[f"Gateway {NS}/httproute-listener-port-matching"]["state"] == "Accepted"


@pytest.mark.parametrize(("listener", "host", "rule"), [
    pytest.param("80", "foo.com", "backend-v1", id="foo.com:80"),
    pytest.param("8080", "foo.com", "backend-v2", id="foo.com:8080"),
    pytest.param("8090", "foo.com", "backend-v3", id="foo.com:8090"),
    pytest.param("8090", "bar.com", None, id="bar.com:8090"),
])
def test_explain_gives_the_listeners_rule(gw, listener: str, host: str, rule: str | None
                                          ) -> None:
    port = {"80": gw.port, "8080": PORT_8080, "8090": PORT_8090}[listener]
    snapshot = build_snapshot([gw.config_dir]).snapshot
    assert snapshot is not None
    explanation = explain(snapshot, "GET", f"http://{host}:{port}/", {})
    routed = [line for line in explanation.lines if line.startswith("  rule ")]
    text = "\n".join(explanation.lines)
    if rule is None:
        assert not explanation.matched and not routed, text
    else:
        assert len(routed) == 1 and f"(Route {NS}/{rule}, rule 0)" in routed[0], text
