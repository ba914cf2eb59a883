"""Routing over the wire: hosts, path precedence (exact > regex > prefix), conditions,
rewrites, redirects, direct responses, delegation and invalid-route replacement."""

from __future__ import annotations

import pytest

from tests.support import resources as r
from tests.support.client import RawClient, roundtrip
from tests.support.gateway import Gateway
from tests.support.upstream import ScriptedUpstream


def direct(body: str, status: int = 200) -> dict:
    return {"directResponse": {"status": status, "body": body}}


@pytest.fixture(scope="module")
def ups(module_upstreams) -> dict[str, ScriptedUpstream]:
    return {name: module_upstreams(name) for name in ("a", "b", "catalog")}


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    return module_gateways(lambda port: r.dump(
        r.gateway(
            port,
            routeSelector={"namespaces": ["default", "team-a"]},
            invalidRouteResponse={"status": 500, "body": "broken route, try later"},
        ),
        r.route("exact-host", hostnames=["api.example.com"],
                rules=[r.rule(forward=r.forward("a"))]),
        r.route("wild-host", hostnames=["*.example.com"], rules=[r.rule(forward=r.forward("b"))]),
        r.route("paths", hostnames=["paths.test"], rules=[
            r.rule({"prefix": "/p"}, **direct("prefix-short")),
            r.rule({"prefix": "/p/long"}, **direct("prefix-long")),
            r.rule({"exact": "/p/exact"}, **direct("exact")),
            r.rule({"regex": "/r/[0-9]+"}, **direct("regex")),
            r.rule({"prefix": "/r/1"}, **direct("prefix-r")),
        ]),
        # a catch-all prefix declared first no longer hides the regex rule (istio#60695)
        r.route("catch-all", hostnames=["catchall.test"], rules=[
            r.rule({"prefix": "/"}, forward=r.forward("a")),
            r.rule({"regex": "/items/[0-9]+"}, forward=r.forward("b")),
            r.rule({"exact": "/items/0"}, **direct("exact")),
        ]),
        r.route("conditions", hostnames=["cond.test"], rules=[
            r.rule({"prefix": "/c"}, **direct("plain")),
            r.rule({"prefix": "/c"}, method="POST", **direct("post")),
            r.rule({"prefix": "/c"}, headers=[{"name": "x-v", "value": "2"}], **direct("header")),
            r.rule({"prefix": "/c"}, headers=[{"name": "x-re", "regex": "ab+c"}],
                   **direct("header-regex")),
            r.rule({"prefix": "/c"}, query=[{"name": "debug", "value": "true"}],
                   **direct("query")),
        ]),
        r.route("rewrites", hostnames=["rw.test"], rules=[
            r.rule({"prefix": "/api"}, forward=r.forward("a", rewrite={"prefix": "/"})),
            r.rule({"prefix": "/v1"}, forward=r.forward("a", rewrite={"prefix": "/v2"})),
            r.rule({"exact": "/old-path"}, forward=r.forward("a", rewrite={"fullPath": "/new"})),
            r.rule(forward=r.forward("a")),
        ]),
        r.route("redirects", hostnames=["redir.test"], rules=[
            r.rule({"exact": "/r-path"}, redirect={"path": "/new", "statusCode": 301}),
            r.rule({"exact": "/r-scheme"}, redirect={"scheme": "https", "statusCode": 308}),
            r.rule({"exact": "/r-host"}, redirect={"host": "other.example"}),
            r.rule({"exact": "/r-port"}, redirect={"port": 8443, "statusCode": 307}),
        ]),
        r.route("direct", hostnames=["direct.test"], rules=[r.rule(**direct("teapot\n", 418))]),
        r.route("delegating", hostnames=["deleg.test"], rules=[
            r.rule({"prefix": "/team"}, delegate={"selector": {
                "namespaces": ["team-a"], "matchLabels": {"app": "catalog"}}}),
        ]),
        r.route_table("catalog", namespace="team-a", labels={"app": "catalog"}, rules=[
            r.rule({"prefix": "/team/catalog"}, forward=r.forward("catalog")),
        ]),
        r.route("broken", hostnames=["broken.test"], rules=[r.rule(forward=r.forward("nope"))]),
        r.upstream("a", ups["a"].port),
        r.upstream("b", ups["b"].port),
        r.upstream("catalog", ups["catalog"].port, namespace="team-a"),
    ))


@pytest.fixture(autouse=True)
def _reset(ups) -> None:
    for upstream in ups.values():
        upstream.reset()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("api.example.com", "a", id="exact-host"),
        pytest.param("API.Example.com:80", "a", id="exact-host-case-and-port"),
        pytest.param("shop.example.com", "b", id="wildcard"),
        pytest.param("a.b.example.com", "b", id="wildcard-deeper"),
        pytest.param("example.com", None, id="wildcard-not-apex"),
    ],
)
def test_host_matching(gw, host, expected) -> None:
    response = roundtrip(gw.port, "GET", "/x", host=host)
    if expected is None:
        assert response.status == 404
    else:
        assert response.status == 200, response
        assert response.header("x-upstream") == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/p/exact", "exact", id="exact-beats-prefix"),
        pytest.param("/p/exact/x", "prefix-short", id="exact-is-not-a-prefix"),
        pytest.param("/p/long/x", "prefix-long", id="longer-prefix-wins"),
        pytest.param("/p/longer", "prefix-short", id="prefix-is-segment-wise"),
        pytest.param("/p", "prefix-short", id="prefix-itself"),
        pytest.param("/r/22", "regex", id="regex"),
        pytest.param("/r/1", "regex", id="regex-beats-prefix"),
        pytest.param("/r/1/x", "prefix-r", id="prefix-when-no-regex-matches"),
        pytest.param("/r/abc", None, id="regex-is-full-match"),
    ],
)
def test_path_precedence(gw, path, expected) -> None:
    response = roundtrip(gw.port, "GET", path, host="paths.test")
    if expected is None:
        assert response.status == 404
    else:
        assert (response.status, response.body.decode()) == (200, expected)


@pytest.mark.parametrize(
    ("path", "upstream"),
    [
        pytest.param("/items/42", "b", id="regex-beats-catch-all-prefix"),
        pytest.param("/items/x", "a", id="catch-all-takes-the-rest"),
        pytest.param("/items/42/x", "a", id="regex-is-full-match"),
    ],
)
def test_catch_all_prefix_does_not_hide_regex_rules(gw, ups, path, upstream) -> None:
    response = roundtrip(gw.port, "GET", path, host="catchall.test")
    assert response.status == 200, response
    assert response.header("x-upstream") == upstream
    assert ups[upstream].last.target == path  # what the chosen upstream received
    other = "a" if upstream == "b" else "b"
    assert not ups[other].requests


def test_exact_beats_regex(gw, ups) -> None:
    response = roundtrip(gw.port, "GET", "/items/0", host="catchall.test")
    assert (response.status, response.body) == (200, b"exact")
    assert all(not u.requests for u in ups.values())


@pytest.mark.parametrize(
    ("method", "target", "headers", "expected"),
    [
        pytest.param("GET", "/c", {}, "plain", id="no-condition"),
        pytest.param("POST", "/c", {"Content-Length": "0"}, "post", id="method"),
        pytest.param("GET", "/c", {"X-V": "2"}, "header", id="header"),
        pytest.param("GET", "/c", {"X-V": "3"}, "plain", id="header-mismatch"),
        pytest.param("GET", "/c", {"X-Re": "abbbc"}, "header-regex", id="header-regex"),
        pytest.param("GET", "/c", {"X-Re": "abbbcd"}, "plain", id="header-regex-full-match"),
        pytest.param("GET", "/c/x?debug=true", {}, "query", id="query"),
        pytest.param("GET", "/c?debug=false", {}, "plain", id="query-mismatch"),
    ],
)
def test_conditions(gw, method, target, headers, expected) -> None:
    response = roundtrip(gw.port, method, target, headers, host="cond.test")
    assert (response.status, response.body.decode()) == (200, expected)


@pytest.mark.parametrize(
    ("target", "upstream_target"),
    [
        pytest.param("/api/users?x=1", "/users?x=1", id="prefix-to-root"),
        pytest.param("/api", "/", id="prefix-itself-to-root"),
        pytest.param("/api/", "/", id="prefix-slash-to-root"),
        pytest.param("/v1/items/7", "/v2/items/7", id="prefix-to-prefix"),
        pytest.param("/old-path?q=2", "/new?q=2", id="full-path"),
        pytest.param("/untouched/x", "/untouched/x", id="no-rewrite"),
    ],
)
def test_rewrites(gw, ups, target, upstream_target) -> None:
    assert roundtrip(gw.port, "GET", target, host="rw.test").status == 200
    assert ups["a"].last.target == upstream_target


@pytest.mark.parametrize(
    ("target", "status", "location"),
    [
        pytest.param("/r-path", 301, "http://redir.test:{port}/new", id="path"),
        pytest.param("/r-path?a=1", 301, "http://redir.test:{port}/new?a=1", id="path-keeps-query"),
        pytest.param("/r-scheme", 308, "https://redir.test/r-scheme", id="scheme-drops-port"),
        pytest.param("/r-host", 302, "http://other.example:{port}/r-host", id="host"),
        pytest.param("/r-port", 307, "http://redir.test:8443/r-port", id="port"),
    ],
)
def test_redirects(gw, ups, target, status, location) -> None:
    response = roundtrip(gw.port, "GET", target, host=f"redir.test:{gw.port}")
    assert response.status == status
    assert response.header("location") == location.format(port=gw.port)
    assert all(not u.requests for u in ups.values())


def test_direct_response(gw) -> None:
    response = roundtrip(gw.port, "GET", "/anything", host="direct.test")
    assert (response.status, response.body) == (418, b"teapot\n")
    assert response.header("content-length") == "7"


def test_delegation_to_a_route_table(gw, ups) -> None:
    response = roundtrip(gw.port, "GET", "/team/catalog/items", host="deleg.test")
    assert response.status == 200
    assert response.header("x-upstream") == "catalog"
    assert ups["catalog"].last.target == "/team/catalog/items"
    assert roundtrip(gw.port, "GET", "/team/other", host="deleg.test").status == 404


def test_invalid_route_answers_the_gateways_invalid_route_response(gw, ups) -> None:
    broken = roundtrip(gw.port, "GET", "/x", host="broken.test")
    assert (broken.status, broken.body) == (500, b"broken route, try later")
    healthy = roundtrip(gw.port, "GET", "/x", host="api.example.com")
    assert healthy.status == 200
    assert healthy.header("x-upstream") == "a"
    assert any("broken" in w for w in gw.stats()["warnings"])


@pytest.mark.parametrize("status", [204, 304])
def test_a_direct_response_without_a_body_by_definition_sends_none(gateways, status: int
                                                                    ) -> None:
    """RFC 9110 §6.4.1: 204 and 304 never have a body. A directResponse of one with a body
    sent the body after the head: on a keep-alive connection the client read it as the start
    of the next answer."""
    gw = gateways(lambda port: r.dump(r.gateway(port), r.route("nobody", rules=[
        r.rule(directResponse={"status": status, "body": "nothing"})])))
    with RawClient(gw.port) as client:
        client.request("GET", "/first")
        first = client.read_final()
        client.request("GET", "/second")
        second = client.read_final()
    assert (first.status, first.body, second.status, second.body) == (status, b"", status, b"")
    assert first.header("content-length") is None
