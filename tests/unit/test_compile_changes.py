"""A worker compiling a version whose rules are, around a change, the very objects it compiled
last compiles only the rules between them and changes its last router by their entries
(``compile._compile_changed_rules``): what it serves is what a compilation from scratch of the
same version serves, after any sequence of insertions, removals, edits and moves."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Iterator

import pytest

from propylon import ir
from propylon.config import load_text
from propylon.ir.delta import reuse_unchanged
from propylon.ir.model import ConsumerIR
from propylon.runtime.compile import CompileError, Services, compile_snapshot, compiling
from propylon.runtime.compiled import Cluster, CompiledRoute, Runtime
from propylon.translate import translate
from tests.support.filter_ctx import Ctx
from tests.support.request_view import Req
from tests.support.resources import SHOP_EDGE_YAML

GATEWAY = SHOP_EDGE_YAML
HOSTS = ["", "\n  hostnames: [h.example.com]", "\n  hostnames: ['*.example.com']"]


def route(name: str, body: str = "pong", variant: int = 0) -> str:
    """Routes of the same prefix shadow or back up each other, by host, header and order."""
    return f"""---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: {name}, namespace: shop}}
spec:{HOSTS[variant % 3]}
  rules:
    - matches: [{{path: {{prefix: /{name}/api}}}}, {{path: {{exact: /shared}}}}]
      forward: {{backends: [{{upstream: app}}]}}
    - matches: [{{path: {{prefix: /{name}}}, headers: [{{name: x-beta, value: "1"}}]}}]
      directResponse: {{status: 202, body: beta-{name}}}
      policies: [{{headers: {{response: {{set: {{x-route: {name}}}}}}}}}]
    - matches: [{{path: {{prefix: /{name}}}}}, {{path: {{prefix: /common}}}}]
      directResponse: {{status: 200, body: {body}}}
    - matches: [{{path: {{regex: "/{name}/[0-9]+"}}}}, {{path: {{regex: "/n/[0-9]+"}}}}]
      directResponse: {{status: 201, body: digits-{name}}}
"""


def snapshot(routes: list[tuple[str, str, int]]) -> ir.SnapshotIR:
    loaded = load_text(GATEWAY + "".join(route(*r) for r in routes))
    assert not loaded.errors
    return translate(loaded.resources)



def served(runtime: Runtime, names: list[str]) -> list[tuple[object, ...]]:
    router = runtime.gateways["shop/edge"].router
    out: list[tuple[object, ...]] = []
    for host in ("x", "h.example.com", "z.example.com"):
        for path in ["/shared", "/common/1", "/n/7", *(p for name in names for p in (
                f"/{name}/api/1", f"/{name}/x", f"/{name}/12"))]:
            for headers in ({}, {"x-beta": "1"}):
                found: CompiledRoute | None = router.match(host, "GET", path, Req(headers))
                out.append((host, path, headers.get("x-beta"), None) if found is None else (
                    host, path, headers.get("x-beta"), found.rule_id, found.route_label,
                    found.rule_label, found.direct_body, len(found.chain.filters)))
    return out


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def replaced(worker: Services) -> int:
    """How many rules the last compilations replaced by position (0: compiled whole)."""
    return worker.routes.placed["shop/edge"].replaced


def test_changes_compile_only_what_changed_and_serve_as_from_scratch(
        loop: asyncio.AbstractEventLoop) -> None:
    routes = [(name, "pong", i) for i, name in enumerate("abcdefghijklmnop")]
    worker = Services.scratch(loop)
    last = snapshot(routes)
    compile_snapshot(last, worker)
    assert replaced(worker) == 0
    steps = [
        lambda rs: [*rs[:5], ("ff", "new", 1), *rs[5:]],  # inserted in the middle
        lambda rs: [r for r in rs if r[0] != "b"],  # removed
        lambda rs: [(n, "edited", v) if n == "g" else (n, b, v) for n, b, v in rs],  # edited
        lambda rs: [*rs, ("zz", "last", 2)],  # appended
        lambda rs: [("0a", "first", 0), *rs],  # prepended
        lambda rs: [(n, b, v + 1) if n == "k" else (n, b, v) for n, b, v in rs],  # new host
        lambda rs: rs,  # nothing
    ]
    for number, step in enumerate(steps):
        routes = step(routes)
        new = reuse_unchanged(snapshot(routes), last)
        runtime = compile_snapshot(new, worker)
        names = [name for name, _, _ in routes]
        assert served(runtime, names) == served(compile_snapshot(new, Services.scratch(loop)),
                                                names), number
        last = new
    assert replaced(worker) > 0  # the changes above went by position


def test_many_insertions_at_one_place_then_compile_whole(loop: asyncio.AbstractEventLoop
                                                         ) -> None:
    """Orders between two neighbours run out after some thirty insertions at one place (and
    replaced rules past a quarter of them): the Gateway is compiled whole again, orders spaced
    anew, and serves the same throughout."""
    routes = [("a", "pong", 0), ("zz", "pong", 0)]
    worker = Services.scratch(loop)
    last = snapshot(routes)
    compile_snapshot(last, worker)
    wholes = 0
    for n in range(40):
        routes = [routes[0], (f"b{39 - n:02d}", "x", n), *routes[1:]]
        new = reuse_unchanged(snapshot(routes), last)
        runtime = compile_snapshot(new, worker)
        wholes += replaced(worker) == 0
        names = [name for name, _, _ in routes]
        assert served(runtime, names) == served(compile_snapshot(new, Services.scratch(loop)),
                                                names), n
        last = new
    assert wholes >= 1


def test_changed_consumers_or_upstreams_compile_every_rule(loop: asyncio.AbstractEventLoop
                                                           ) -> None:
    routes = [(name, "pong", 0) for name in "abc"]
    worker = Services.scratch(loop)
    first = snapshot(routes)
    compile_snapshot(first, worker)
    edited = reuse_unchanged(snapshot([*routes, ("d", "pong", 0)]), first)
    compile_snapshot(edited, worker)
    assert replaced(worker) == 0  # placed after a change: nothing was replaced in its span
    consumers = dataclasses.replace(edited, consumers=(ConsumerIR("shop/c", "c"),))
    compile_snapshot(consumers, worker)
    assert replaced(worker) == 0
    gateway = edited.gateways[0]
    upstream = dataclasses.replace(gateway.upstreams[0], connect_timeout=9.0)
    other = dataclasses.replace(consumers, gateways=(
        dataclasses.replace(gateway, upstreams=(upstream,)),))
    runtime = compile_snapshot(other, worker)
    found = runtime.gateways["shop/edge"].router.match("x", "GET", "/a/api", Req({}))
    assert found is not None and found.single_cluster is runtime.gateways[
        "shop/edge"].clusters["shop/app"]


def test_changed_consumers_keep_every_chain_and_are_served_once_committed(
        loop: asyncio.AbstractEventLoop) -> None:
    """The API key and basic auth filters read the Consumers on each request from the
    worker's ``ConsumerDirectory``, whose table is the committed configuration's: a Consumer
    change keeps every chain and route (it built again the chains of every rule with such a
    filter: 10,000 Routes behind a Gateway-level apiKey policy, 1.0-1.2 s of a worker's CPU
    for one Consumer), the new key is accepted and the old one refused from the commit on,
    and a compilation that fails leaves the served consumers as they were."""
    routes = [(name, "pong", 0) for name in "abc"]
    worker = Services.scratch(loop)
    plain = snapshot(routes)
    gateway = plain.gateways[0]
    keyed_rule = dataclasses.replace(gateway.rules[0], policies=(
        ir.PolicyIR("apiKey", {"header": "x-key"}, "test"),))

    def with_key(key: str, gateway: ir.GatewayIR = gateway) -> ir.SnapshotIR:
        consumer = ConsumerIR("shop/c", "c", api_keys=(hashlib.sha256(key.encode()).hexdigest(),))
        return dataclasses.replace(plain, consumers=(consumer,), gateways=(dataclasses.replace(
            gateway, rules=(keyed_rule, *gateway.rules[1:])),))

    def chains(runtime: Runtime) -> dict[str, object]:
        router = runtime.gateways["shop/edge"].router
        found = {path: router.match("x", "GET", path, Req({"x-beta": "1"}))
                 for path in ("/a/api/1", "/b/x", "/c/x")}  # the /b/x, /c/x rules: headers
        return {path: route.chain for path, route in found.items() if route is not None}

    def admits(runtime: Runtime, key: str) -> bool:
        ctx = Ctx(headers=[(b"x-key", key.encode())])
        return chains(runtime)["/a/api/1"].filters[0].on_request(ctx) is None

    first = compile_snapshot(with_key("one"), worker)
    before = chains(first)
    assert admits(first, "one") and not admits(first, "two")
    runtime = compile_snapshot(with_key("two"), worker)
    assert chains(runtime) == before  # the very chains
    assert admits(runtime, "two") and not admits(runtime, "one")
    assert served(runtime, list("abc")) == served(
        compile_snapshot(with_key("two"), Services.scratch(loop)), list("abc"))
    broken = dataclasses.replace(gateway, listeners=(*gateway.listeners, *gateway.listeners))
    with pytest.raises(CompileError):  # two listeners on one port
        compile_snapshot(with_key("three", broken), worker)
    assert admits(runtime, "two") and not admits(runtime, "three")


def test_a_consumer_change_builds_again_only_the_plugins_that_may_see_them(
        loop: asyncio.AbstractEventLoop) -> None:
    """The installed test plugins: ``testStampAfterHeaders`` says ``sees_consumers = False``,
    ``testStampBeforeAuth`` says nothing (a plugin may build its filters from the Consumers).
    A Consumer change keeps the chain of the rule with the first and builds the other's
    again."""
    plain = snapshot([(name, "pong", 0) for name in "ab"])
    gateway = plain.gateways[0]
    first, second = gateway.rules[0], next(
        rule for rule in gateway.rules if rule.route == "Route shop/b")
    stamped = dataclasses.replace(gateway, rules=tuple(
        dataclasses.replace(rule, policies=(ir.PolicyIR("testStampAfterHeaders", {}, "t"),))
        if rule is first else
        dataclasses.replace(rule, policies=(ir.PolicyIR("testStampBeforeAuth", {}, "t"),))
        if rule is second else rule for rule in gateway.rules))

    def with_consumer(name: str) -> ir.SnapshotIR:
        return dataclasses.replace(plain, consumers=(ConsumerIR(f"shop/{name}", name),),
                                   gateways=(stamped,))

    def chains(runtime: Runtime) -> tuple[object, object]:
        router = runtime.gateways["shop/edge"].router
        a = router.match("x", "GET", "/a/api/1", Req({}))
        b = router.match("x", "GET", "/b/api/1", Req({}))
        assert a is not None and b is not None
        assert [f.policy_type for f in a.chain.filters] == ["testStampAfterHeaders"]
        assert [f.policy_type for f in b.chain.filters] == ["testStampBeforeAuth"]
        return a.chain, b.chain

    worker = Services.scratch(loop)
    before = chains(compile_snapshot(with_consumer("c"), worker))
    after = chains(compile_snapshot(with_consumer("d"), worker))
    assert after[0] is before[0] and after[1] is not before[1]


def test_a_consumer_change_makes_again_the_chains_after_a_gateway_plugin_only(
        loop: asyncio.AbstractEventLoop) -> None:
    """A Gateway-level policy of a plugin that may see the Consumers: a Consumer change
    makes every rule's chain again with a new plugin filter (built from the new Consumers),
    but the rules keep their compiled routes (given the new chains at the commit, as when
    the Gateway's policies are edited) and the filters of their own policies; what is served
    is what a compilation from scratch serves. A compilation of the change that fails leaves
    the next one to make the chains again."""
    names = list("abcd")
    plain = snapshot([(name, "pong", 0) for name in names])
    gateway = dataclasses.replace(plain.gateways[0], default_policies=(
        ir.PolicyIR("testStampBeforeAuth", {}, "Gateway shop/edge"),))

    def with_consumer(name: str, gateway: ir.GatewayIR = gateway) -> ir.SnapshotIR:
        return dataclasses.replace(plain, consumers=(ConsumerIR(f"shop/{name}", name),),
                                   gateways=(gateway,))

    def found(runtime: Runtime) -> list[CompiledRoute]:
        router = runtime.gateways["shop/edge"].router
        routes = [router.match("x", "GET", path, Req({"x-beta": "1"}))
                  for name in names for path in (f"/{name}/api/1", f"/{name}/x")]
        assert all(route is not None for route in routes)
        return routes  # type: ignore[return-value]

    worker = Services.scratch(loop)
    first = found(compile_snapshot(with_consumer("c"), worker))
    chains = [route.chain for route in first]
    plugin_filters = [route.chain.filters[0] for route in first]
    own = [route.chain.filters[-1] for route in first[1::2]]  # the /x rules' own headers
    broken = dataclasses.replace(gateway, listeners=(*gateway.listeners, *gateway.listeners))
    with pytest.raises(CompileError):  # two listeners on one port: refused, nothing kept
        compile_snapshot(with_consumer("d", broken), worker)
    assert [route.chain for route in first] == chains
    runtime = compile_snapshot(with_consumer("d"), worker)
    after = found(runtime)
    assert all(a is b for a, b in zip(after, first, strict=True))  # the compiled routes
    assert all(route.chain is not chain for route, chain in zip(after, chains, strict=True))
    assert all(route.chain.filters[0] is not f
               for route, f in zip(after, plugin_filters, strict=True))
    assert all(route.chain.filters[-1] is f for route, f in zip(after[1::2], own, strict=True))
    assert [f.policy_type for f in after[1].chain.filters] == ["testStampBeforeAuth",
                                                               "headers"]
    assert served(runtime, names) == served(
        compile_snapshot(with_consumer("d"), Services.scratch(loop)), names)


def test_a_compilation_failing_after_carrying_leaves_the_last_one_kept(
        loop: asyncio.AbstractEventLoop) -> None:
    """A change compiled by position takes the last compilation's memos over instead of
    copying them (``runtime/memo_journal.py``); when it then fails (here the router refuses
    a rule it cannot place), the memos hold what the last successful one left: the next
    compilation keeps the routes compiled for the rules unchanged since, and what it serves
    is what a compilation from scratch serves."""
    routes = [(name, "pong", 0) for name in "abcdef"]
    worker = Services.scratch(loop)
    first = snapshot(routes)
    compile_snapshot(first, worker)
    edited = reuse_unchanged(snapshot([*routes[:3], ("cc", "new", 0), *routes[3:]]), first)
    compile_snapshot(edited, worker)  # compiled by position: the memos were taken over
    assert replaced(worker) == 0 and worker.routes.placed["shop/edge"].rules is \
        edited.gateways[0].rules
    kept_routes = {gateway: dict(entries) for gateway, entries in worker.routes.kept.items()}
    kept_chains = {gateway: dict(entries) for gateway, entries in worker.chains.kept.items()}
    assert len(kept_routes["shop/edge"]) == len(edited.gateways[0].rules)

    gateway = edited.gateways[0]
    rules = list(gateway.rules)
    at = next(i for i, rule in enumerate(rules) if rule.route == "Route shop/cc")
    match = rules[at].matches[0]
    rules[at] = dataclasses.replace(rules[at], matches=(
        dataclasses.replace(match, path=dataclasses.replace(match.path, kind="bogus")),
        *rules[at].matches[1:]))
    rules.insert(at, dataclasses.replace(rules[at - 1], id="another"))
    broken = dataclasses.replace(edited, gateways=(dataclasses.replace(
        gateway, rules=(*rules[:at], *rules[at:])),))
    with pytest.raises(ValueError, match="unknown path match kind"):
        compile_snapshot(broken, worker)
    assert worker.routes.kept == kept_routes
    assert worker.chains.kept == kept_chains
    names = [name for name, _, _ in routes] + ["cc"]
    again = reuse_unchanged(snapshot([*routes[:3], ("cc", "new", 0), ("cd", "x", 1),
                                      *routes[3:]]), edited)
    runtime = compile_snapshot(again, worker)
    assert served(runtime, [*names, "cd"]) == served(
        compile_snapshot(again, Services.scratch(loop)), [*names, "cd"])
    for rule in edited.gateways[0].rules[:6]:  # before the change: the same routes
        assert worker.routes.kept["shop/edge"][id(rule)] is kept_routes["shop/edge"][id(rule)]


def k8s_snapshot(routes: list[tuple[str, str | None, str]]) -> ir.SnapshotIR:
    """A Gateway API Gateway with listeners ``web`` (two sections, by hostname, on port 8080)
    and ``admin`` (8081), and an HTTPRoute per (name, sectionName or None: every listener,
    path)."""
    text = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: propylon
  listeners:
    - {name: web, port: 8080, protocol: HTTP, hostname: "*.example.com",
       allowedRoutes: {namespaces: {from: All}}}
    - {name: web-other, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
    - {name: admin, port: 8081, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
"""
    for name, section, path in routes:
        parent = "{name: edge, namespace: infra" + (
            f", sectionName: {section}}}" if section else "}")
        text += f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{parent}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
      filters: [{{type: RequestRedirect, requestRedirect: {{hostname: {name}.test}}}}]
"""
    loaded = load_text(text)
    assert not loaded.errors
    return translate(loaded.resources)


def served_on_listeners(runtime: Runtime, paths: list[str]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for key in sorted(runtime.listeners):
        router = runtime.listeners[key].router
        for host in ("a.example.com", "other.test"):
            for path in paths:
                found: CompiledRoute | None = router.match(host, "GET", path, Req({}))
                out.append((key, host, path, found and found.rule_id, found and [
                    (type(f).__name__, getattr(getattr(f, "response_edits", None),
                                               "additions", None))
                    for f in found.chain.filters]))
    return out


def test_listener_sections_change_in_place_and_serve_as_from_scratch(
        loop: asyncio.AbstractEventLoop) -> None:
    """Routes served on some listeners only: each section's router is changed in place as
    the Gateway's is (``RouteMemo.section_router``), and serves what a compilation from
    scratch serves."""
    routes: list[tuple[str, str | None, str]] = [
        (f"r{i}", ("web", "web-other", "admin", None)[i % 4], f"/p{i % 5}") for i in range(24)]
    worker = Services.scratch(loop)
    last = k8s_snapshot(routes)
    compile_snapshot(last, worker)
    steps = [
        lambda rs: [*rs[:7], ("r7a", "admin", "/p2"), *rs[7:]],  # inserted
        lambda rs: [r for r in rs if r[0] != "r3"],  # removed
        lambda rs: [(n, "web" if n == "r9" else s, p) for n, s, p in rs],  # moved listener
        lambda rs: [(n, s, "/new" if n == "r12" else p) for n, s, p in rs],  # edited
        lambda rs: [*rs, ("zz", None, "/p1")],  # appended, every listener
        lambda rs: rs,
    ]
    paths = ["/p0", "/p1/x", "/p2", "/p3", "/p4", "/new", "/none"]
    for number, step in enumerate(steps):
        routes = step(routes)
        new = reuse_unchanged(k8s_snapshot(routes), last)
        runtime = compile_snapshot(new, worker)
        fresh = compile_snapshot(new, Services.scratch(loop))
        assert served_on_listeners(runtime, paths) == served_on_listeners(fresh, paths), number
        last = new
    assert worker.routes.placed["infra/edge"].replaced > 0  # the changes went by position
    # the Gateway's own policies set, then edited: each rule keeps its compiled routes,
    # which every listener's router shares, given their new chains at the commit
    kept = served_routes(compile_snapshot(last, worker), paths)
    for value in ("1", "2"):
        gateway = last.gateways[0]
        policy = ir.PolicyIR("headers", {"response": {"set": {"x-gw": value}}},
                             f"Gateway {gateway.key}")
        new = reuse_unchanged(dataclasses.replace(last, gateways=(dataclasses.replace(
            gateway, default_policies=(policy,)),)), last)
        runtime = compile_snapshot(new, worker)
        fresh = compile_snapshot(new, Services.scratch(loop))
        assert served_on_listeners(runtime, paths) == served_on_listeners(fresh, paths), value
        served = served_on_listeners(runtime, paths)
        assert ("_ResponseOnlyHeadersFilter", ((b"x-gw", value.encode()),)) in [
            f for *_, filters in served for f in filters or ()], value
        assert served_routes(runtime, paths) == kept
        last = new


def served_routes(runtime: Runtime, paths: list[str]) -> list[CompiledRoute | None]:
    """The compiled routes every listener serves the ``paths`` with (the objects)."""
    return [runtime.listeners[key].router.match(host, "GET", path, Req({}))
            for key in sorted(runtime.listeners) for host in ("a.example.com", "other.test")
            for path in paths]


def with_upstream(snapshot: ir.SnapshotIR, **changes: object) -> ir.SnapshotIR:
    gateway = snapshot.gateways[0]
    upstream = dataclasses.replace(gateway.upstreams[0], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(snapshot, gateways=(
        dataclasses.replace(gateway, upstreams=(upstream,)),))


def addresses(runtime: Runtime) -> list[tuple[str, int]]:
    cluster = runtime.gateways["shop/edge"].clusters["shop/app"]
    return [(e.pool.address, e.pool.port) for e in cluster.endpoints]


def test_an_upstream_changing_its_endpoints_keeps_its_cluster_and_every_rule(
        loop: asyncio.AbstractEventLoop) -> None:
    """An Upstream whose endpoints (or their pools' settings) change keeps its cluster, given
    the new endpoints once the compilation is committed: the rules forwarding to it keep
    their compiled routes (10,000 Routes to one Upstream compiled again for an endpoint).
    So does a change of its balancing, limits or passive health (next test)."""
    routes = [(name, "pong", 0) for name in "abc"]
    worker = Services.scratch(loop)
    first = snapshot(routes)
    runtime = compile_snapshot(first, worker)
    cluster = runtime.gateways["shop/edge"].clusters["shop/app"]
    compiled = dict(worker.routes.kept["shop/edge"])
    endpoint = first.gateways[0].upstreams[0].endpoints[0]
    moved = with_upstream(first, endpoints=(dataclasses.replace(endpoint, port=9001),
                                            dataclasses.replace(endpoint, port=9002)),
                          connect_timeout=2.0)

    # a compilation that fails leaves the serving cluster's endpoints as they were
    listener = first.gateways[0].listeners[0]
    clash = dataclasses.replace(first.gateways[0], key="shop/other", rules=(), upstreams=())
    broken = dataclasses.replace(moved, gateways=(*moved.gateways, clash))
    with pytest.raises(Exception, match=str(listener.port)):
        compile_snapshot(broken, worker)
    assert [(e.pool.address, e.pool.port) for e in cluster.endpoints] == [("127.0.0.1", 9000)]

    again = compile_snapshot(moved, worker)
    assert again.gateways["shop/edge"].clusters["shop/app"] is cluster
    assert addresses(again) == [("127.0.0.1", 9001), ("127.0.0.1", 9002)]
    assert all(worker.routes.kept["shop/edge"][key] is entry for key, entry in compiled.items())
    assert served(again, list("abc")) == served(compile_snapshot(moved, Services.scratch(loop)),
                                                list("abc"))



def cluster_settings(cluster: Cluster) -> tuple[object, ...]:
    ejection = cluster.ejection
    balancing = cluster.make_balancer  # a partial of make_balancer: policy, hash_on
    return (balancing.args, balancing.keywords,  # type: ignore[attr-defined]
            type(cluster.balancer).__name__, cluster.hash_kind, cluster.hash_name,
            cluster.panic_threshold, cluster.breaker, cluster.failover_threshold,
            None if ejection is None else (
                ejection.consecutive_errors, ejection.base_ejection_time,
                ejection.max_ejection_time, ejection.max_ejection_percent),
            [(e.pool.address, e.pool.port, e.weight) for e in cluster.endpoints],
            [len(group) for group in cluster.groups])


@pytest.mark.parametrize("changes", [
    pytest.param({"lb_policy": "least_request"}, id="balancing"),
    pytest.param({"lb_policy": "ring_hash", "hash_on": ir.HashOnIR("header", "X-User")},
                 id="ring-hash"),
    pytest.param({"panic_threshold": 20.0, "circuit_breaker": ir.CircuitBreakerIR(max_requests=3),
                  "passive_health": ir.PassiveHealthIR(consecutive_errors=2)}, id="limits"),
    pytest.param({"failover": (ir.EndpointGroupIR((ir.EndpointIR("127.0.0.1", 9009),)),),
                  "failover_threshold": 50.0}, id="failover"),
])
def test_an_upstream_changing_its_settings_keeps_its_cluster_and_every_rule(
        loop: asyncio.AbstractEventLoop, changes: dict[str, object]) -> None:
    """Balancing, panic threshold, passive health, circuit breaker, failover: the cluster
    takes them over in place when the compilation is committed, as one compiled from
    scratch has them, and every rule keeps its compiled routes (an Upstream's balancing
    changed at 10,000 Routes compiled every rule again: 0.4 s of each worker's CPU); a
    compilation that fails leaves them as they were."""
    routes = [(name, "pong", 0) for name in "abc"]
    worker = Services.scratch(loop)
    first = snapshot(routes)
    runtime = compile_snapshot(first, worker)
    cluster = runtime.gateways["shop/edge"].clusters["shop/app"]
    before = cluster_settings(cluster)
    compiled = dict(worker.routes.kept["shop/edge"])
    changed = with_upstream(first, **changes)

    listener = first.gateways[0].listeners[0]
    clash = dataclasses.replace(first.gateways[0], key="shop/other", rules=(), upstreams=())
    with pytest.raises(Exception, match=str(listener.port)):
        compile_snapshot(dataclasses.replace(changed, gateways=(*changed.gateways, clash)),
                         worker)
    assert cluster_settings(cluster) == before
    # refused after it compiled (a worker's new listener or certificate): the same
    with pytest.raises(OSError), compiling(changed, worker) as refused:
        assert refused.gateways["shop/edge"].clusters["shop/app"] is cluster
        raise OSError("address already in use")
    assert cluster_settings(cluster) == before

    again = compile_snapshot(changed, worker)
    assert again.gateways["shop/edge"].clusters["shop/app"] is cluster
    assert all(worker.routes.kept["shop/edge"][key] is entry for key, entry in compiled.items())
    fresh = compile_snapshot(changed, Services.scratch(loop))
    assert cluster_settings(cluster) == cluster_settings(fresh.gateways["shop/edge"].clusters[
        "shop/app"]) != before
    assert served(again, list("abc")) == served(fresh, list("abc"))
