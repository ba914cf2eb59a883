"""Compiling a new version keeps the clusters, compiled routes and router buckets of what did
not change (``runtime/route_memo.py``), and serves exactly what a compilation from scratch
serves: same rules, labels, clusters and endpoints for every request."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from propylon import ir
from propylon.config import load_text
from propylon.ir.delta import reuse_unchanged
from propylon.runtime.compile import Services, compile_snapshot, refresh_cluster
from propylon.runtime.compiled import CompiledRoute, Runtime
from propylon.runtime.discovery import DnsQuery, Record
from propylon.translate import translate
from tests.support.request_view import Req
from tests.support.resources import SHOP_EDGE_YAML

GATEWAY = SHOP_EDGE_YAML + """---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: named, namespace: shop}
spec:
  endpoints: [{address: app.internal, port: 9001}]
  dns: {refresh: 5s}
"""


def route(name: str, upstream: str = "app", body: str = "pong", extra: str = "") -> str:
    """Routes named c have a host of their own (its own host table)."""
    hosts = f"\n  hostnames: [{name}.example.com]" if name == "c" else ""
    return f"""---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: {name}, namespace: shop}}
spec:{hosts}
  rules:
    - name: api
      matches: [{{path: {{prefix: /{name}/api}}}}]
      forward: {{backends: [{{upstream: {upstream}}}]}}
    - matches: [{{path: {{prefix: /{name}}}, headers: [{{name: x-beta, value: "1"}}]}}]
      forward: {{backends: [{{upstream: named}}]}}
      policies: [{{headers: {{response: {{set: {{x-beta: "yes"}}}}}}}}]
    - matches: [{{path: {{prefix: /{name}}}}}{extra}]
      directResponse: {{status: 200, body: {body}}}
    - matches: [{{path: {{regex: "/{name}/[0-9]+"}}}}]
      directResponse: {{status: 201, body: digits}}
"""


def snapshot(*routes: str) -> ir.SnapshotIR:
    loaded = load_text(GATEWAY + "".join(routes))
    assert not loaded.errors
    return translate(loaded.resources)


ANSWER = (DnsQuery("app.internal", False, "auto", (), 5.0), (Record("127.0.0.2"),))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def services(loop: asyncio.AbstractEventLoop, *answers: tuple[DnsQuery, tuple[Record, ...]]
             ) -> Services:
    made = Services.scratch(loop)
    made.answers.update(answers)
    return made



REQUESTS = [(host, path, headers) for name in ("a", "b", "c", "d")
            for host in ("x", f"{name}.example.com")
            for path in (f"/{name}/api/1", f"/{name}/x", f"/{name}/12", "/none")
            for headers in ({}, {"x-beta": "1"})]


def served(runtime: Runtime) -> list[tuple[object, ...]]:
    """What every request of ``REQUESTS`` gets: rule, labels, answer, clusters, endpoints."""
    router = runtime.gateways["shop/edge"].router
    out: list[tuple[object, ...]] = []
    for host, path, headers in REQUESTS:
        found: CompiledRoute | None = router.match(host, "GET", path, Req(headers))
        if found is None:
            out.append((host, path, None))
            continue
        cluster = found.single_cluster
        out.append((host, path, found.rule_id, found.route_label, found.rule_label,
                    found.kind, found.direct_body, found.chain.filters != (),
                    cluster.key if cluster else None,
                    [e.label for e in cluster.endpoints] if cluster else None))
    return out


def test_an_unchanged_version_keeps_every_object(loop: asyncio.AbstractEventLoop) -> None:
    worker = services(loop, ANSWER)
    first = compile_snapshot(snapshot(route("a"), route("b")), worker)
    again = compile_snapshot(snapshot(route("a"), route("b")), worker)
    old, new = first.gateways["shop/edge"], again.gateways["shop/edge"]
    assert all(new.clusters[key] is cluster for key, cluster in old.clusters.items())
    assert served(again) == served(first)
    # translate() from scratch makes new rule objects: the memo keys on identity, so only
    # the clusters are kept; the delta decoding keeps rule objects (next test)


def test_unchanged_rules_keep_their_routes_and_buckets(loop: asyncio.AbstractEventLoop
                                                       ) -> None:
    worker = services(loop, ANSWER)
    first_ir = snapshot(route("a"), route("b"), route("c"))
    first = compile_snapshot(first_ir, worker)
    edited = snapshot(route("a"), route("b", body="pang"), route("c"))
    second_ir = reuse_unchanged(edited, first_ir)
    second = compile_snapshot(second_ir, worker)
    assert served(second) == served(compile_snapshot(edited, services(loop, ANSWER)))
    old_router, new_router = (first.gateways["shop/edge"].router,
                              second.gateways["shop/edge"].router)
    kept = new_router._default[-1].prefixes["/a/api"]
    assert kept is old_router._default[-1].prefixes["/a/api"]
    assert new_router._default[-1].prefixes["/b"] is not old_router._default[-1].prefixes["/b"]
    regex = new_router._exact["c.example.com"][0].regexes[0][1].default
    old_regex = old_router._exact["c.example.com"][0].regexes[0][1].default
    assert regex is not None and old_regex is not None and regex.payload is old_regex.payload


@pytest.mark.parametrize("change", [
    pytest.param(lambda: (route("a"), route("aa"), route("b"), route("c")), id="route-inserted"),
    pytest.param(lambda: (route("a"), route("c")), id="route-removed"),
    pytest.param(lambda: (route("a", upstream="named"), route("b"), route("c")),
                 id="rule-moved-to-another-upstream"),
    pytest.param(lambda: (route("a", extra=", {path: {exact: /a-too}}"), route("b"), route("c")),
                 id="one-more-match-before-the-others"),
])
def test_a_change_serves_what_a_fresh_compilation_does(
        loop: asyncio.AbstractEventLoop, change: object) -> None:
    worker = services(loop, ANSWER)
    first_ir = snapshot(route("a"), route("b"), route("c"))
    compile_snapshot(first_ir, worker)
    edited = snapshot(*change())  # type: ignore[operator]
    second = compile_snapshot(reuse_unchanged(edited, first_ir), worker)
    assert served(second) == served(compile_snapshot(edited, services(loop, ANSWER)))


def test_a_changed_upstream_or_answer_keeps_its_cluster_with_new_endpoints(
        loop: asyncio.AbstractEventLoop) -> None:
    worker = services(loop, ANSWER)
    first_ir = snapshot(route("a"))
    first = compile_snapshot(first_ir, worker)
    clusters = first.gateways["shop/edge"].clusters
    worker.answers[ANSWER[0]] = (Record("127.0.0.3"),)
    again = compile_snapshot(first_ir, worker)
    kept = again.gateways["shop/edge"].clusters
    assert kept["shop/app"] is clusters["shop/app"]
    assert kept["shop/named"] is clusters["shop/named"]  # given the new answer's endpoint
    beta = REQUESTS.index(("x", "/a/x", {"x-beta": "1"}))  # the named upstream's rule
    assert served(again)[beta][-1] == ["127.0.0.3:9001"]
    gateway = first_ir.gateways[0]
    moved = dataclasses.replace(gateway.upstreams[0], endpoints=(
        dataclasses.replace(gateway.upstreams[0].endpoints[0], port=9100),))
    third_ir = dataclasses.replace(first_ir, gateways=(
        dataclasses.replace(gateway, upstreams=(moved, *gateway.upstreams[1:])),))
    third = compile_snapshot(third_ir, worker)
    cluster = third.gateways["shop/edge"].clusters["shop/app"]
    # only its endpoints changed: the same cluster, given them (compile.kept_cluster)
    assert cluster is kept["shop/app"]
    api = REQUESTS.index(("x", "/a/api/1", {}))
    assert served(third)[api][-1] == ["127.0.0.1:9100"]  # the rule's route follows
    balanced = dataclasses.replace(moved, lb_policy="random")
    fourth = compile_snapshot(dataclasses.replace(first_ir, gateways=(
        dataclasses.replace(gateway, upstreams=(balanced, *gateway.upstreams[1:])),)), worker)
    assert fourth.gateways["shop/edge"].clusters["shop/app"] is cluster  # balancing taken over
    assert cluster.make_balancer.args == ("random",)  # type: ignore[attr-defined]
    assert served(fourth)[api][-1] == ["127.0.0.1:9100"]


def test_a_failed_compilation_keeps_the_last_good_memo(loop: asyncio.AbstractEventLoop
                                                       ) -> None:
    worker = services(loop, ANSWER)
    first_ir = snapshot(route("a"))
    compile_snapshot(first_ir, worker)
    kept = dict(worker.routes.kept)
    rules = first_ir.gateways[0].rules
    broken = dataclasses.replace(rules[0], id="bad", matches=(
        ir.MatchIR(ir.PathMatchIR("regex", "(")),))
    bad_ir = dataclasses.replace(first_ir, gateways=(
        dataclasses.replace(first_ir.gateways[0], rules=(*rules, broken)),))
    with pytest.raises(Exception, match=r"unterminated|missing"):
        compile_snapshot(bad_ir, worker)
    assert worker.routes.kept == kept


def test_entries_after_one_more_match_keep_their_buckets(loop: asyncio.AbstractEventLoop
                                                         ) -> None:
    """A match added to a rule moves every later entry's order, not their labels: their
    routes and buckets are kept (a bucket ranks its entries among themselves)."""
    worker = services(loop, ANSWER)
    first_ir = snapshot(route("a"), route("b"), route("c"))
    first = compile_snapshot(first_ir, worker)
    edited = snapshot(route("a", extra=", {path: {exact: /a-too}}"), route("b"), route("c"))
    second = compile_snapshot(reuse_unchanged(edited, first_ir), worker)
    old, new = first.gateways["shop/edge"].router, second.gateways["shop/edge"].router
    assert new._default[-1].prefixes["/b/api"] is old._default[-1].prefixes["/b/api"]
    assert new._default[-1].exact["/a-too"].default is not None


def test_tracing_turned_on_reaches_the_unchanged_rules(loop: asyncio.AbstractEventLoop
                                                       ) -> None:
    """The same rule objects under a Gateway that now traces: every chain is built again with
    the tracing filter first (a kept route would keep serving untraced); compiled again with
    the same tracing, they are all kept (the tracing filter is)."""
    from propylon.observability.trace_filter import TracingFilter

    worker = services(loop, ANSWER)
    first_ir = snapshot(route("a"))
    compile_snapshot(first_ir, worker)
    gateway = first_ir.gateways[0]
    traced = dataclasses.replace(gateway, tracing=ir.TracingIR(
        otlp_endpoint="http://127.0.0.1:4318"))
    runtime = compile_snapshot(dataclasses.replace(first_ir, gateways=(traced,)), worker)
    router = runtime.gateways["shop/edge"].router
    found = [router.match(host, "GET", path, Req(headers))
             for host, path, headers in REQUESTS if path.startswith("/a/")]
    assert found and all(route is not None and isinstance(route.chain.filters[0], TracingFilter)
                         for route in found)
    traced_ir = dataclasses.replace(first_ir, gateways=(traced,))
    again = compile_snapshot(traced_ir, worker).gateways["shop/edge"].router
    # still tracing, nothing changed: the tracing filter and so every route are kept
    assert again._default[-1].prefixes["/a/api"] is router._default[-1].prefixes["/a/api"]
    untraced = compile_snapshot(first_ir, worker).gateways["shop/edge"].router
    assert all(not isinstance(r.chain.filters[0], TracingFilter) if r.chain.filters else True
               for r in (untraced.match(h, "GET", p, Req(hd)) for h, p, hd in REQUESTS
                         if p.startswith("/a/")) if r is not None)


def test_an_upstream_discovered_by_dns_changed_keeps_its_cluster_and_follows_its_names(
        loop: asyncio.AbstractEventLoop) -> None:
    """A DNS-discovered Upstream given another name and port keeps its cluster (the rules
    forwarding to it keep their routes), which expands the new name's answers and follows
    them (``refresh_cluster``), as a cluster compiled from scratch does."""
    other = (DnsQuery("other.internal", False, "auto", (), 5.0), (Record("127.0.0.4"),))
    worker = services(loop, ANSWER, other)
    first_ir = snapshot(route("a"))
    first = compile_snapshot(first_ir, worker)
    cluster = first.gateways["shop/edge"].clusters["shop/named"]
    compiled = dict(worker.routes.kept["shop/edge"])
    gateway = first_ir.gateways[0]
    named = next(u for u in gateway.upstreams if u.key == "shop/named")
    renamed = dataclasses.replace(named, endpoints=(
        dataclasses.replace(named.endpoints[0], address="other.internal", port=9002),))
    edited = dataclasses.replace(first_ir, gateways=(dataclasses.replace(
        gateway, upstreams=tuple(renamed if u is named else u for u in gateway.upstreams)),))
    again = compile_snapshot(edited, worker)
    assert again.gateways["shop/edge"].clusters["shop/named"] is cluster
    assert all(worker.routes.kept["shop/edge"][key] is entry for key, entry in compiled.items())
    assert cluster.source is renamed and {q.name for q in cluster.queries} == {"other.internal"}
    beta = REQUESTS.index(("x", "/a/x", {"x-beta": "1"}))
    assert served(again)[beta][-1] == ["127.0.0.4:9002"]
    assert served(again) == served(compile_snapshot(edited, services(loop, ANSWER, other)))
    worker.answers[other[0]] = (Record("127.0.0.5"),)  # the new name's answer changes
    refresh_cluster(cluster, worker)
    assert [e.label for e in cluster.endpoints] == ["127.0.0.5:9002"]
