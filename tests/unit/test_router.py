"""Router precedence, path semantics, host fallback and conditions (see router.py's header).

Precedence within a host table is exact > regex > prefix (longest first); ties go to the
declaration order; a ``sectioned`` router keeps each host to its listener section's rules.
``tests/unit/test_shadowed.py`` covers ``shadowed``."""

from __future__ import annotations

import re

import pytest

from propylon.ir.model import MatchIR, PathMatchIR, ValueMatchIR
from propylon.runtime.router import Router, RouterEntry, sectioned
from tests.support.request_view import Req


def route(
    name: str,
    path: str = "/",
    kind: str = "prefix",
    hosts: tuple[str, ...] = (),
    method: str | None = None,
    headers: tuple[ValueMatchIR, ...] = (),
    query: tuple[ValueMatchIR, ...] = (),
) -> tuple[str, tuple[str, ...], MatchIR]:
    return name, hosts, MatchIR(PathMatchIR(kind, path), method, headers, query)


def build(*routes: tuple[str, tuple[str, ...], MatchIR]) -> Router[str]:
    return Router(RouterEntry(h, m, name, i) for i, (name, h, m) in enumerate(routes))


def hv(name: str, value: str | None = None, regex: str | None = None) -> ValueMatchIR:
    return ValueMatchIR(name, value, regex)


GET = ("a.com", "GET")

# (routes, (host, method), path, request, expected payload), one case per param.
# fmt: off
CASES = [
    # --- path kinds and their precedence ---
    pytest.param(
        [route("pre", "/a"), route("ex", "/a/b", "exact"), route("rx", "/a/.*", "regex")],
        GET, "/a/b", Req(), "ex", id="exact-beats-prefix-and-regex",
    ),
    pytest.param(
        [route("rx", "/a/.*", "regex"), route("pre", "/a")],
        GET, "/a/c", Req(), "rx", id="regex-beats-prefix",
    ),
    pytest.param(
        [route("pre", "/a/c"), route("rx", "/a/.*", "regex")],
        GET, "/a/c", Req(), "rx", id="regex-beats-earlier-longer-prefix",
    ),
    pytest.param(
        [route("root", "/"), route("rx", "/items/[0-9]+", "regex")],
        GET, "/items/12", Req(), "rx", id="catch-all-prefix-does-not-hide-regex",
    ),
    pytest.param(
        [route("root", "/"), route("rx", "/items/[0-9]+", "regex")],
        GET, "/items/x", Req(), "root", id="regex-no-match-then-prefix",
    ),
    pytest.param(
        [route("rx", "/a/b", "regex"), route("ex", "/a/b", "exact")],
        GET, "/a/b", Req(), "ex", id="exact-beats-earlier-regex",
    ),
    pytest.param(
        [route("rx", "/a/.*", "regex", method="POST"), route("pre", "/a")],
        GET, "/a/b", Req(), "pre", id="regex-conditions-fail-then-prefix",
    ),
    pytest.param(
        [route("rx", "/a/.*", "regex", hosts=("x.a.com",)), route("pre", "/a", hosts=("*.a.com",))],
        ("x.a.com", "GET"), "/a/b", Req(), "rx", id="host-table-before-kind",
    ),
    pytest.param(
        [route("pre", "/a", hosts=("x.a.com",)), route("rx", "/a/.*", "regex", hosts=("*.a.com",))],
        ("x.a.com", "GET"), "/a/b", Req(), "pre", id="exact-host-prefix-beats-wildcard-regex",
    ),
    pytest.param(
        [route("short", "/a"), route("long", "/a/b")],
        GET, "/a/b/c", Req(), "long", id="longest-prefix-wins",
    ),
    pytest.param(
        [route("long", "/a/b"), route("short", "/a")],
        GET, "/a/bc", Req(), "short", id="longest-prefix-is-segment-wise",
    ),
    pytest.param(
        [route("r1", "/x/[0-9]+", "regex"), route("r2", "/x/.*", "regex")],
        GET, "/x/12", Req(), "r1", id="regex-config-order",
    ),
    pytest.param(
        [route("r2", "/x/.*", "regex"), route("r1", "/x/[0-9]+", "regex")],
        GET, "/x/12", Req(), "r2", id="regex-config-order-reversed",
    ),
    pytest.param(
        [route("rx", "/x", "regex")], GET, "/x/y", Req(), None, id="regex-is-full-match",
    ),
    pytest.param(
        [route("ex", "/a", "exact")], GET, "/a/", Req(), None, id="exact-is-exact",
    ),
    # --- segment-wise prefixes ---
    pytest.param([route("v2", "/v2")], GET, "/v2", Req(), "v2", id="prefix-equal"),
    pytest.param([route("v2", "/v2")], GET, "/v2/", Req(), "v2", id="prefix-trailing-slash"),
    pytest.param([route("v2", "/v2")], GET, "/v2/x/y", Req(), "v2", id="prefix-deeper"),
    pytest.param([route("v2", "/v2")], GET, "/v2x", Req(), None, id="prefix-not-substring"),
    pytest.param([route("v2", "/v2")], GET, "/v", Req(), None, id="prefix-longer-than-path"),
    pytest.param([route("root", "/")], GET, "/", Req(), "root", id="root-matches-root"),
    pytest.param([route("root", "/")], GET, "/any/x", Req(), "root", id="root-matches-all"),
    pytest.param([route("api", "/api/")], GET, "/api", Req(), "api", id="config-slash-ignored"),
    pytest.param(
        [route("api", "/api/")], GET, "/api/v1", Req(), "api", id="config-slash-deeper",
    ),
    pytest.param(
        [route("api", "/api/")], GET, "/apix", Req(), None, id="config-slash-not-substring",
    ),
    pytest.param(
        [route("a", "/a"), route("abc", "/a/b/c")],
        GET, "/a/b/cd/e", Req(), "a", id="path-longer-than-longest-prefix",
    ),
    pytest.param(
        [route("ab", "/a/b")], GET, "/a//b", Req(), None, id="double-slash-is-a-segment",
    ),
    # --- hosts and fallback ---
    pytest.param(
        [route("any"), route("wild", hosts=("*.a.com",)), route("exact", hosts=("x.a.com",))],
        ("x.a.com", "GET"), "/", Req(), "exact", id="exact-host-first",
    ),
    pytest.param(
        [route("any"), route("wild", hosts=("*.a.com",))],
        ("x.a.com", "GET"), "/", Req(), "wild", id="wildcard-before-any",
    ),
    pytest.param(
        [route("wild", hosts=("*.a.com",))],
        ("x.y.a.com", "GET"), "/", Req(), "wild", id="wildcard-matches-deeper",
    ),
    pytest.param(
        [route("wild", hosts=("*.a.com",))],
        ("a.com", "GET"), "/", Req(), None, id="wildcard-not-apex",
    ),
    pytest.param(
        [route("wild", hosts=("*.a.com",))],
        ("xa.com", "GET"), "/", Req(), None, id="wildcard-is-label-wise",
    ),
    pytest.param(
        [route("short", hosts=("*.a.com",)), route("long", hosts=("*.y.a.com",))],
        ("x.y.a.com", "GET"), "/", Req(), "long", id="longest-wildcard-first",
    ),
    pytest.param(
        [route("exact", "/only", hosts=("x.a.com",)), route("wild", "/", hosts=("*.a.com",))],
        ("x.a.com", "GET"), "/other", Req(), "wild", id="fallback-exact-to-wildcard",
    ),
    pytest.param(
        [
            route("long", "/only", hosts=("*.y.a.com",)),
            route("short", "/", hosts=("*.a.com",)),
        ],
        ("x.y.a.com", "GET"), "/other", Req(), "short", id="fallback-wildcard-to-wildcard",
    ),
    pytest.param(
        [route("wild", "/only", hosts=("*.a.com",)), route("any")],
        ("x.a.com", "GET"), "/other", Req(), "any", id="fallback-wildcard-to-any",
    ),
    pytest.param(
        [route("exact", "/", hosts=("x.a.com",)), route("any", "/a/b/c", "exact")],
        ("x.a.com", "GET"), "/a/b/c", Req(), "exact", id="host-table-beats-better-path",
    ),
    pytest.param(
        [route("other", hosts=("b.com",))], GET, "/", Req(), None, id="other-host-no-match",
    ),
    pytest.param(
        [route("star", hosts=("*",))], GET, "/", Req(), "star", id="star-is-any-host",
    ),
    pytest.param(
        [route("upper", hosts=("X.A.com",))],
        ("x.a.com", "GET"), "/", Req(), "upper", id="config-hosts-lower-cased",
    ),
    pytest.param(
        [route("multi", "/m", hosts=("b.com", "*.a.com"))],
        ("x.a.com", "GET"), "/m", Req(), "multi", id="several-hostnames",
    ),
    # --- conditions ---
    pytest.param([route("get", method="GET")], GET, "/", Req(), "get", id="method-match"),
    pytest.param(
        [route("post", method="POST")], GET, "/", Req(), None, id="method-mismatch",
    ),
    pytest.param(
        [route("lower", method="get")], GET, "/", Req(), "lower", id="method-upper-cased",
    ),
    pytest.param(
        [route("h", headers=(hv("x-env", "canary"),))],
        GET, "/", Req({"x-env": "canary"}), "h", id="header-exact",
    ),
    pytest.param(
        [route("h", headers=(hv("x-env", "canary"),))],
        GET, "/", Req({"x-env": "canary2"}), None, id="header-exact-mismatch",
    ),
    pytest.param(
        [route("h", headers=(hv("x-env", "canary"),))],
        GET, "/", Req(), None, id="header-missing",
    ),
    pytest.param(
        [route("h", headers=(hv("x-v", regex="v[0-9]+"),))],
        GET, "/", Req({"x-v": "v12"}), "h", id="header-regex",
    ),
    pytest.param(
        [route("h", headers=(hv("x-v", regex="v[0-9]+"),))],
        GET, "/", Req({"x-v": "v12b"}), None, id="header-regex-is-full-match",
    ),
    pytest.param(
        [route("h", headers=(hv("x-present"),))],
        GET, "/", Req({"x-present": ""}), "h", id="header-presence",
    ),
    pytest.param(
        [route("q", query=(hv("debug", "1"),))],
        GET, "/", Req(query={"debug": "1"}), "q", id="query-exact",
    ),
    pytest.param(
        [route("q", query=(hv("debug", "1"),))],
        GET, "/", Req(query={"debug": "0"}), None, id="query-exact-mismatch",
    ),
    pytest.param(
        [route("q", query=(hv("id", regex="[a-f]+"),))],
        GET, "/", Req(query={"id": "cafe"}), "q", id="query-regex",
    ),
    pytest.param(
        [route("q", query=(hv("id", regex="[a-f]+"),))],
        GET, "/", Req(query={"id": "cafez"}), None, id="query-regex-mismatch",
    ),
    pytest.param(
        [
            route("plain", "/a"),
            route("one", "/a", method="GET"),
            route("two", "/a", method="GET", headers=(hv("x", "1"),)),
        ],
        GET, "/a", Req({"x": "1"}), "two", id="more-conditions-win",
    ),
    pytest.param(
        [
            route("plain", "/a"),
            route("one", "/a", method="GET"),
            route("two", "/a", method="GET", headers=(hv("x", "1"),)),
        ],
        GET, "/a", Req(), "one", id="conditions-fail-then-fewer",
    ),
    pytest.param(
        [route("one", "/a", method="POST"), route("plain", "/a")],
        GET, "/a", Req(), "plain", id="conditions-fail-then-unconditioned",
    ),
    pytest.param(
        [route("cond", "/a/b", method="POST"), route("short", "/a")],
        GET, "/a/b", Req(), "short", id="conditions-fail-then-shorter-prefix",
    ),
    pytest.param(
        [route("cond", "/a/b", "exact", method="POST"), route("rx", "/a/.", "regex")],
        GET, "/a/b", Req(), "rx", id="conditions-fail-then-regex",
    ),
    pytest.param(
        [route("rx", "/a", "regex", method="POST"), route("rx2", "/a", "regex")],
        GET, "/a", Req(), "rx2", id="same-regex-fewer-conditions",
    ),
    pytest.param(
        [route("cond", "/a", method="GET"), route("long", "/a/b")],
        GET, "/a/b", Req(), "long", id="path-beats-conditions",
    ),
    pytest.param(
        [route("first", "/a", method="GET"), route("second", "/a", method="GET")],
        GET, "/a", Req(), "first", id="order-tie-break",
    ),
    pytest.param(
        [route("first", "/a"), route("second", "/a/")],
        GET, "/a", Req(), "first", id="order-tie-break-normalised-prefix",
    ),
    pytest.param(
        [route("h", headers=(hv("x", "1"),)), route("q", query=(hv("y", "2"),))],
        GET, "/", Req({"x": "1"}, {"y": "2"}), "h", id="order-tie-break-equal-conditions",
    ),
    # --- no match ---
    pytest.param([], GET, "/", Req(), None, id="empty-router"),
    pytest.param([route("a", "/a")], GET, "/b", Req(), None, id="no-route-matches"),
]
# fmt: on


@pytest.mark.parametrize(("routes", "host_method", "path", "request_", "expected"), CASES)
def test_match(
    routes: list[tuple[str, tuple[str, ...], MatchIR]],
    host_method: tuple[str, str],
    path: str,
    request_: Req,
    expected: str | None,
) -> None:
    host, method = host_method
    assert build(*routes).match(host, method, path, request_) == expected


@pytest.mark.parametrize(
    "match",
    [
        pytest.param(MatchIR(PathMatchIR("glob", "/a")), id="unknown-path-kind"),
        pytest.param(MatchIR(PathMatchIR("regex", "(")), id="bad-path-regex"),
        pytest.param(MatchIR(headers=(hv("x", "1", "1"),)), id="value-and-regex"),
        pytest.param(MatchIR(query=(hv("x", regex="["),)), id="bad-query-regex"),
    ],
)
def test_invalid_entries_raise_at_construction(match: MatchIR) -> None:
    with pytest.raises((ValueError, re.error)):
        Router([RouterEntry((), match, "x", 0)])


def test_ten_thousand_routes() -> None:
    routes = []
    for i in range(2_500):
        routes.append(route(f"exact{i}", f"/svc{i}/health", "exact"))
        routes.append(route(f"prefix{i}", f"/svc{i}/api"))
        routes.append(route(f"get{i}", f"/svc{i}/api", method="GET"))
        routes.append(route(f"host{i}", f"/svc{i}", hosts=(f"h{i}.example.com",)))
    router = build(*routes)
    for i in (0, 1, 1_234, 2_499):
        assert router.match("a.com", "GET", f"/svc{i}/health", Req()) == f"exact{i}"
        assert router.match("a.com", "GET", f"/svc{i}/api/v1/x", Req()) == f"get{i}"
        assert router.match("a.com", "PUT", f"/svc{i}/api", Req()) == f"prefix{i}"
        assert router.match(f"h{i}.example.com", "PUT", f"/svc{i}/x", Req()) == f"host{i}"
        assert router.match(f"h{i}.example.com", "PUT", f"/svc{i}/api", Req()) == f"host{i}"
        assert router.match("a.com", "GET", f"/svc{i}", Req()) is None
    assert router.match("a.com", "GET", "/svc2500/api", Req()) is None


def test_many_hosts_beyond_the_wildcard_memo() -> None:
    router = build(route("wild", "/w", hosts=("*.a.com",)), route("any", "/"))
    for i in range(5_000):
        assert router.match(f"h{i}.a.com", "GET", "/w/x", Req()) == "wild"
        assert router.match(f"h{i}.a.com", "GET", "/x", Req()) == "any"
        assert router.match(f"h{i}.b.com", "GET", "/w", Req()) == "any"


# The Gateway API's listener isolation (conformance GatewayHTTPListenerIsolation): four
# sections on one port, each with the rules of the route attached to it; a host is answered
# by its section's rules only, never by a less specific section's, even where that section's
# rules name the host (the second route of each section: the intersecting hostnames).
SECTIONS = {
    None: [route("empty", "/empty"),
           route("empty-named", "/empty-named", hosts=("*.example.com", "bar.com"))],
    "*.example.com": [route("wild", "/wild", hosts=("*.example.com",)),
                      route("wild-named", "/wild-named", hosts=("abc.foo.example.com",))],
    "*.foo.example.com": [route("foo", "/foo", hosts=("*.foo.example.com",))],
    "abc.foo.example.com": [route("abc", "/abc", hosts=("abc.foo.example.com",))],
}


def sectioned_router() -> Router[str]:
    return sectioned([(hostname, build(*routes)) for hostname, routes in SECTIONS.items()])


@pytest.mark.parametrize(("host", "served"), [
    pytest.param("bar.com", {"/empty": "empty", "/empty-named": "empty-named"}, id="no-hostname"),
    pytest.param("bar.example.com", {"/wild": "wild"}, id="wildcard"),
    pytest.param("bar.foo.example.com", {"/foo": "foo"}, id="longer-wildcard"),
    pytest.param("a.bar.foo.example.com", {"/foo": "foo"}, id="longer-wildcard-deeper"),
    pytest.param("abc.foo.example.com", {"/abc": "abc"}, id="exact"),
    pytest.param("example.com", {"/empty": "empty"}, id="wildcard-not-its-own-suffix"),
])
def test_a_sectioned_router_answers_a_host_with_its_section_only(
    host: str, served: dict[str, str]
) -> None:
    router = sectioned_router()
    paths = [r[2].path.value for routes in SECTIONS.values() for r in routes]
    for _ in range(2):  # the second time from the memo
        assert {path: router.match(host, "GET", path, Req()) for path in paths} == {
            path: served.get(path) for path in paths}


def test_a_host_no_section_takes_matches_nothing() -> None:
    router = sectioned([("foo.com", build(route("foo"))), ("*.bar.com", build(route("bar")))])
    assert router.match("foo.com", "GET", "/", Req()) == "foo"
    assert router.match("a.bar.com", "GET", "/", Req()) == "bar"
    assert router.match("bar.com", "GET", "/", Req()) is None
    assert router.match("other.com", "GET", "/", Req()) is None


def test_one_section_without_hostname_is_its_router() -> None:
    router = build(route("any"))
    assert sectioned([(None, router)]) is router
