"""``propylon validate`` of a large configuration translates it in two parts, one per core
(``translate/parts.py``): what it reports must be what one translation of the whole reports,
problems, locations, rule count and version included, or the whole is translated instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from propylon.cli import problems
from propylon.config import load_paths
from propylon.config.outlines import outline_key
from propylon.translate.parts import describe, merge, route_ranges
from propylon.translate.translator import translate_booked
from tests.support import resources as r

ROUTES = 40


def _check(paths: list[Path], split: bool, monkeypatch: pytest.MonkeyPatch) -> problems.Check:
    monkeypatch.setattr(problems, "SPLIT_FROM_ROUTES", 1 if split else 10**9)
    return problems.check_paths(paths)


def _same_both_ways(path: Path, monkeypatch: pytest.MonkeyPatch, merged: bool | None = True
                    ) -> problems.Check:
    """Checked as a whole and in parts, with the same result; ``merged``: whether the parts'
    results could be put together (else the split check translated the whole; None: the
    parts did not get that far)."""
    whole = _check([path], False, monkeypatch)
    made: list[object] = []

    def recorded(*args: Any) -> Any:
        made.append(merge(*args))
        return made[-1]

    monkeypatch.setattr(problems, "merge", recorded)
    split = _check([path], True, monkeypatch)
    assert split.to_json() == whole.to_json()
    assert [str(p) for p in split.problems] == [str(p) for p in whole.problems]
    assert split.built == whole.built
    if merged is None:
        assert not made
    else:
        assert len(made) == 1 and (made[0] is not None) == merged
    return whole


def _routes(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [r.route(f"r{i:03d}", rules=[
        r.rule({"prefix": f"/r{i}/api"}, forward=r.forward("echo")),
        r.rule({"exact": f"/r{i}/item"}, method="GET", forward=r.forward("echo")),
        r.rule({"exact": f"/r{i}/ping"}, directResponse={"status": 200, "body": "pong"},
               policies=[r.headers_policy(response={"set": {"x-r": "yes"}})]),
    ]) for i in range(count)]


def _write(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    for start in range(0, len(docs), 7):  # several files, the parts' Routes in several
        (folder / f"part-{start:03d}.yaml").write_text(r.dump(*docs[start:start + 7]))
    return folder


def test_a_valid_configuration_checks_the_same_in_parts(tmp_path, monkeypatch) -> None:
    folder = _write(tmp_path, r.gateway(8080), r.upstream("echo", 9000), *_routes(ROUTES))
    whole = _same_both_ways(folder, monkeypatch)
    assert whole.built is not None and whole.built.rules == 3 * ROUTES
    assert not whole.problems


def test_problems_in_both_parts_are_each_reported_at_their_line(tmp_path, monkeypatch) -> None:
    routes = _routes(ROUTES)
    for index in (3, ROUTES - 3):  # one in each part: an Upstream that does not exist
        routes[index]["spec"]["rules"][0]["forward"] = r.forward("missing")
    docs = [
        r.gateway(8080), r.upstream("echo", 9000), *routes,
        r.upstream("unused", 9001),  # referenced by no rule: a note, from neither part alone
        r.route("elsewhere", namespace="other", rules=[r.rule(forward=r.forward("echo"))]),
        # a Policy for a Route of the second part, one naming a rule that does not exist
        r.policy("late", [{"kind": "Route", "name": f"r{ROUTES - 1:03d}"}],
                 **r.headers_policy(request={"set": {"x-late": "1"}})),
        r.policy("wrong", [{"kind": "Route", "name": "r001", "sectionName": "nope"}],
                 **r.headers_policy(request={"set": {"x-w": "1"}})),
        *[r.policy(f"named-{i}", [{"kind": "Route", "name": f"r{i:03d}", "sectionName": "api"}],
                   **r.headers_policy(request={"set": {"x-n": "1"}})) for i in (2, ROUTES - 2)],
    ]
    for index in (2, ROUTES - 2):
        routes[index]["spec"]["rules"][0]["name"] = "api"
    whole = _same_both_ways(_write(tmp_path, *docs), monkeypatch)
    assert whole.failed
    text = "\n".join(str(p) for p in whole.problems)
    assert "r003" in text and f"r{ROUTES - 3:03d}" in text and "has no rule named" in text
    assert all(p.file and p.line for p in whole.problems if "missing" in p.message)


@pytest.mark.parametrize("broken", [(3,), (ROUTES - 3,), (3, ROUTES - 3)],
                         ids=["first-part", "second-part", "both"])
def test_documents_with_errors_are_all_reported(tmp_path, monkeypatch, broken) -> None:
    """Each part validates only its own Routes' documents: an error in either is reported
    as the loader reports every error of a configuration, and the rest is translated with
    the broken Routes contained, as ``run`` would serve it."""
    routes = _routes(ROUTES)
    for index in broken:
        routes[index]["spec"]["rules"][1]["forward"]["timeout"] = "soon"
        routes[index]["spec"]["hostname"] = ["typo.example"]
    whole = _same_both_ways(_write(tmp_path, r.gateway(8080), r.upstream("echo", 9000),
                                   *routes), monkeypatch)
    assert whole.built is not None and len(whole.problems) == 2 * len(broken), whole.problems
    assert all(p.file and p.line for p in whole.problems)
    assert sum("unknown field" in p.message for p in whole.problems) == len(broken)


def _schema_errors(case: str) -> list[dict[str, Any]]:
    """A configuration with resources that fail validation, as ``case`` says where."""
    routes = _routes(ROUTES)
    late, early = ROUTES - 3, 3
    extra: list[dict[str, Any]] = []
    if case in ("stand-in-first", "stand-in-second"):  # its matches still read: a stand-in
        routes[early if case.endswith("first") else late]["spec"]["rules"][1]["forward"][
            "timeout"] = "soon"
    if case in ("left-out-first", "left-out-second"):  # nothing of it read safely
        routes[early if case.endswith("first") else late]["spec"]["hostname"] = ["x"]
    if case == "policy-on-broken-routes":  # a Policy targeting one of each kind
        routes[late]["spec"]["rules"][1]["forward"]["timeout"] = "soon"
        routes[early]["spec"]["hostname"] = ["x"]
        extra.append(r.policy("on-broken", [
            {"kind": "Route", "name": f"r{i:03d}"} for i in (early, late, ROUTES - 1)],
            **r.headers_policy(request={"set": {"x-p": "1"}})))
    if case == "broken-policy":  # fails closed on Routes of both parts
        extra.append(r.policy("closed", [
            {"kind": "Route", "name": f"r{i:03d}"} for i in (early, late)],
            rateLimit={"requests": "many", "per": "1s"}))
    if case == "broken-upstream":  # used by every Route of both parts
        return [r.gateway(8080), r.upstream("echo", 9000, connectTimeot="1s"), *routes]
    if case == "defined-twice":  # a Route of the second part written again, then invalid
        again = _routes(ROUTES)[late]
        broken = _routes(ROUTES)[late]
        broken["spec"]["rules"][0]["forward"]["timeout"] = "soon"
        extra += [again, broken]
    if case == "broken-gateway":
        return [r.gateway(8080, listenerLimits={"maxHeaders": "lots"}),
                r.upstream("echo", 9000), *routes]
    if case == "broken-consumer":
        extra.append(r.consumer("c", {"apiKeys": "not-a-list"}))
    return [r.gateway(8080), r.upstream("echo", 9000), *routes, *extra]


@pytest.mark.parametrize("case", [
    "stand-in-first", "stand-in-second", "left-out-first", "left-out-second",
    "policy-on-broken-routes", "broken-policy", "broken-upstream", "defined-twice",
    "broken-gateway", "broken-consumer"])
def test_resources_failing_validation_are_contained_in_parts(tmp_path, monkeypatch, case
                                                             ) -> None:
    """A resource that fails validation, wherever it is, is contained by the part that
    validated it (every part, for a kind the parts do not split), as ``run`` contains it, and
    the parts merge to what the whole reports (a Route of one part left out: the other's
    outline of it is not noted unused, the whole has no such Route)."""
    # a Route written again with a schema error: the part that outlines it knows only that it
    # is written twice, the part that validates it gives its errors too; the whole is checked
    whole = _same_both_ways(_write(tmp_path, *_schema_errors(case)), monkeypatch,
                            merged=case != "defined-twice")
    assert whole.failed and whole.problems
    assert whole.built is not None


@pytest.mark.parametrize("shared", [False, True], ids=["own-tables", "one-table-for-all"])
def test_delegation_checks_the_same_in_parts(tmp_path, monkeypatch, shared) -> None:
    """Each Route delegating to its own RouteTable (two of them broken, one in each part), or
    all of them to one: its rules then appear under each, shadowing each other across the
    parts, and the whole is translated."""
    tables = [r.route_table(f"t{i:03d}", labels={"group": f"g{i}"}, rules=[
        r.rule({"prefix": f"/g{i}/t"},
               forward=r.forward("absent" if i in (3, ROUTES - 3) else "echo"))])
        for i in range(ROUTES)]
    delegating = [r.route(f"d{i:03d}", rules=[
        r.rule({"prefix": "/g0" if shared else f"/g{i}"},
               delegate={"selector": {"matchLabels": {"group": "g0" if shared else f"g{i}"}}})])
        for i in range(ROUTES)]
    whole = _same_both_ways(_write(tmp_path, r.gateway(8080), r.upstream("echo", 9000),
                                   *tables, *delegating), monkeypatch, merged=not shared)
    assert whole.failed == (not shared)


def _delegating(count: int, tables_of: Any) -> list[dict[str, Any]]:
    """Route ``d<i>`` delegating ``/g<i>`` to the RouteTables labelled ``group: g<i>``."""
    return [r.route(f"d{i:03d}", rules=[
        r.rule({"prefix": f"/g{i}"}, delegate={"selector": {"matchLabels": {"group": f"g{i}"}}})])
        for i in range(count)]


def _table(name: str, group: str, rule: dict[str, Any] | None = None,
           labels: dict[str, Any] | None = None) -> dict[str, Any]:
    return r.route_table(name, labels=labels or {"group": group}, rules=[
        rule or r.rule({"prefix": f"/{group}/{name}"}, forward=r.forward("echo"))])


def test_each_part_validates_its_tables_and_those_its_routes_reach(tmp_path) -> None:
    """RouteTables are split by key like Routes: a part validates its own range of them and
    the ones its Routes delegate to (here named so that every Route's table is in the other
    part's range), and outlines the rest."""
    tables = [_table(f"t{ROUTES - 1 - i:03d}", f"g{i}") for i in range(ROUTES)]
    folder = _write(tmp_path, r.gateway(8080), r.upstream("echo", 9000), *tables,
                    *_delegating(ROUTES, None))
    texts = problems.read_texts([folder], [])
    parsed = problems.parse_all(texts, parallel=False)
    keys = [key for kind, key in (outline_key(d.data) for docs, _ in parsed for d in docs
                                  if outline_key(d.data)) if kind == "RouteTable"]
    route_keys = [f"default/d{i:03d}" for i in range(ROUTES)]
    validated_in_parts = []
    for routes, own in zip(route_ranges(route_keys, (0.5, 0.5)),
                           route_ranges(keys, (0.5, 0.5)), strict=True):
        loaded = problems._part_loaded(texts, parsed, routes, own)
        assert loaded is not None
        validated = {t.key for t in loaded.resources
                     if t.kind == "RouteTable" and t.spec.rules[0].matches}
        reached = {f"default/t{ROUTES - 1 - int(k[-3:]):03d}" for k in route_keys
                   if k in routes}
        assert validated == {k for k in keys if k in own} | reached
        validated_in_parts.append(validated)
    assert set().union(*validated_in_parts) == set(keys)


@pytest.mark.parametrize("broken", ["own-range", "other-range"])
def test_a_broken_table_is_reported_whichever_part_validates_it(
        tmp_path, monkeypatch, broken) -> None:
    """A RouteTable with an unknown field, in the first part's range of tables but reached
    from the second part's Routes (or from the first's): the loader's error, as for the
    whole, and the rest translated around it. Reached from its own part's Routes, it is
    contained there and the parts merge; from the other part's, that part cannot have it
    validated and the whole is checked."""
    tables = [_table(f"t{i:03d}", f"g{i}") for i in range(ROUTES)]
    index = ROUTES - 3 if broken == "own-range" else 3
    tables[index]["spec"]["rules"][0]["forward"]["timeot"] = "5s"
    groups = list(range(ROUTES)) if broken == "own-range" else list(reversed(range(ROUTES)))
    delegating = [r.route(f"d{i:03d}", rules=[
        r.rule({"prefix": f"/g{g}"}, delegate={"selector": {"matchLabels": {"group": f"g{g}"}}})])
        for i, g in enumerate(groups)]
    whole = _same_both_ways(_write(tmp_path, r.gateway(8080), r.upstream("echo", 9000),
                                   *tables, *delegating), monkeypatch,
                           merged=True if broken == "own-range" else None)
    assert whole.built is not None and len(whole.problems) == 1, whole.problems
    assert f"RouteTable default/t{index:03d}" in str(whole.problems[0])


def test_nested_delegation_across_table_ranges_checks_the_same(tmp_path, monkeypatch) -> None:
    """A Route of the first part delegates to a table of the second part's range, which
    delegates on to another there: the part validates both, and the check merges."""
    tables = [_table(f"t{i:03d}", f"g{i}") for i in range(ROUTES)]
    tables[-1] = _table(f"t{ROUTES - 1:03d}", "g0", r.rule(
        {"prefix": "/g0/deep"}, delegate={"selector": {"matchLabels": {"group": "deep"}}}))
    tables.append(_table("t999", "deep", r.rule({"prefix": "/g0/deep/x"},
                                                forward=r.forward("absent"))))
    delegating = _delegating(ROUTES, None)
    whole = _same_both_ways(_write(tmp_path, r.gateway(8080), r.upstream("echo", 9000),
                                   *tables, *delegating), monkeypatch)
    # the nested table's unknown Upstream: found by the part that reached it
    assert any("t999" in str(p) and "absent" in str(p) for p in whole.problems), whole.problems


def test_tables_labelled_with_numbers_are_validated_not_outlined(tmp_path, monkeypatch) -> None:
    """``group: 7`` is the text ``7`` once validated: outlined, a selector of ``"7"`` would
    not have picked the table, so a part validates it instead."""
    tables = [_table(f"t{i:03d}", "", labels={"group": i}) for i in range(ROUTES)]
    delegating = [r.route(f"d{i:03d}", rules=[r.rule(
        {"prefix": f"/t{ROUTES - 1 - i:03d}"},
        delegate={"selector": {"matchLabels": {"group": str(ROUTES - 1 - i)}}})])
        for i in range(ROUTES)]
    for i, table in enumerate(tables):
        table["spec"]["rules"][0]["matches"][0]["path"] = {"prefix": f"/t{i:03d}/x"}
    whole = _same_both_ways(_write(tmp_path, r.gateway(8080), r.upstream("echo", 9000),
                                   *tables, *delegating), monkeypatch)
    assert not whole.problems and whole.built is not None and whole.built.rules == ROUTES


def test_a_rule_shadowed_from_the_other_part_is_reported(tmp_path, monkeypatch) -> None:
    routes = _routes(ROUTES)
    routes[-1]["spec"]["rules"].append(r.rule({"prefix": "/r0/api"}, forward=r.forward("echo")))
    whole = _same_both_ways(_write(tmp_path, r.gateway(8080), r.upstream("echo", 9000),
                                   *routes), monkeypatch, merged=False)
    assert [p.severity for p in whole.problems] == ["warning"]
    assert "never matches" in whole.problems[0].message


def test_a_catch_all_and_a_disabled_gateway_check_the_same(tmp_path, monkeypatch) -> None:
    routes = _routes(ROUTES)
    routes[-1]["spec"]["rules"].append(r.rule({"regex": ".*"}, forward=r.forward("echo")))
    docs = [r.gateway(8080), r.upstream("echo", 9000), *routes,
            r.gateway(8081, name="closed"),
            r.policy("closed", [{"kind": "Gateway", "name": "closed", "sectionName": "x"}],
                     **r.headers_policy(response={"set": {"x": "1"}}))]
    _same_both_ways(_write(tmp_path, *docs), monkeypatch, merged=False)


def _parts(folder: Path) -> tuple[Any, ...]:
    resources = load_paths([folder]).resources
    first, second = route_ranges([r.key for r in resources if r.kind == "Route"], (0.5, 0.5))
    booked = translate_booked(resources, routes=first)
    own = describe(booked)  # before the next translation: the shadow report's buckets
    return booked, own, describe(translate_booked(resources, routes=second))


def test_parts_that_may_shadow_each_other_are_not_merged(tmp_path) -> None:
    routes = _routes(ROUTES)
    routes[-1]["spec"]["rules"].append(r.rule({"prefix": "/r0/api"}, forward=r.forward("echo")))
    booked, own, other = _parts(_write(tmp_path, r.gateway(8080), r.upstream("echo", 9000),
                                       *routes))
    assert merge(booked, own, [other]) is None


def test_parts_split_the_routes_in_key_order(tmp_path) -> None:
    booked, own, other = _parts(_write(tmp_path, r.gateway(8080), r.upstream("echo", 9000),
                                       *_routes(ROUTES)))
    assert own.gateways["default/gw"].rules == other.gateways["default/gw"].rules == 60
    merged = merge(booked, own, [other])
    assert merged is not None and merged.rules == 3 * ROUTES
    statuses = {s.key: s for s in merged.translation.snapshot.statuses if s.kind == "Route"}
    assert len(statuses) == ROUTES and all(s.gateways == ("default/gw",)
                                           for s in statuses.values())


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_every_example_checks_the_same_in_parts(example, monkeypatch) -> None:
    """Gateway API and Ingress objects, TLS, plugins, WAF, several Gateways: whatever the
    parts could not be sure of, the result is the whole's."""
    whole = _check([EXAMPLES / example], False, monkeypatch)
    split = _check([EXAMPLES / example], True, monkeypatch)
    assert split.to_json() == whole.to_json()
    assert [str(p) for p in split.problems] == [str(p) for p in whole.problems]
    assert split.built == whole.built


# -- Gateway API and Ingress objects: the Routes they become are split as Routes are -------
_K8S_GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: propylon
  listeners:
    - {name: web, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
    - {name: api.v1, port: 8081, protocol: HTTP, hostname: api.test,
       allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec: {ports: [{name: http, port: 80, targetPort: 8000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: shop, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: http, port: 8000}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec: {ports: [{port: 81, targetPort: 8001}]}
"""

# the propylon.dev/v1 Gateway that serves the Ingresses' Routes
_INGRESS_GATEWAY = """---
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: native, namespace: infra}
spec:
  listeners: [{name: web, port: 9090}]
  routeSelector: {namespaces: ["*"], matchLabels: {propylon.dev/ingress-class: propylon}}
"""


def _http_route(name: str, i: int, section: str | None = None, path: str | None = None,
                service: str = "echo") -> str:
    parent = f"{{name: edge, namespace: infra, sectionName: {section}}}" if section \
        else "{name: edge, namespace: infra}"
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: shop, labels: {{team: t{i % 3}}}}}
spec:
  parentRefs: [{parent}]
  rules:
    - name: orders.v1
      matches: [{{path: {{type: PathPrefix, value: {path or f"/{name}/api"}}}}}]
      backendRefs: [{{name: {service}, port: 80}}]
      timeouts: {{request: 5s}}
    - matches: [{{path: {{type: Exact, value: /{name}/ping}}, method: GET,
                  headers: [{{name: x-beta, value: "1"}}]}}]
      filters: [{{type: ResponseHeaderModifier,
                 responseHeaderModifier: {{set: [{{name: x-beta, value: "yes"}}]}}}}]
      backendRefs: [{{name: echo, port: 80}}]
"""


def _kubernetes(tmp_path: Path, *extra: str, sections: bool = False) -> Path:
    """A Gateway API configuration: HTTPRoutes (dotted names among them; with ``sections``,
    some on one listener section only), GRPCRoutes, an Ingress, a Policy on a rule of one
    HTTPRoute and on another HTTPRoute, spread over several files."""
    docs = [_http_route(f"r{i:03d}" if i % 5 else f"api.r{i:03d}", i,
                        section="api.v1" if sections and i % 7 == 0 else None)
            for i in range(ROUTES)]
    docs += [f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: g{i}, namespace: shop}}
spec:
  parentRefs: [{{name: edge, namespace: infra}}]
  rules: [{{matches: [{{method: {{service: shop.Cart{i}}}}}],
           backendRefs: [{{name: echo, port: 80}}]}}]
""" for i in range(3)]
    docs.append("""---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: legacy, namespace: shop}
spec:
  ingressClassName: propylon
  rules:
    - host: legacy.test
      http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}]
""" + _INGRESS_GATEWAY + """---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {name: rule-policy, namespace: shop}
spec:
  targetRefs: [{kind: HTTPRoute, name: r031, sectionName: orders.v1}]
  headers: {response: {set: {x-policy: rule}}}
---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {name: route-policy, namespace: shop}
spec:
  targetRefs: [{kind: HTTPRoute, name: api.r005}]
  headers: {response: {set: {x-policy: route}}}
""")
    docs += list(extra)
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(_K8S_GATEWAY)
    for start in range(0, len(docs), 9):
        (folder / f"routes-{start:03d}.yaml").write_text("".join(docs[start:start + 9]))
    return folder


@pytest.mark.parametrize("sections", [False, True])
def test_gateway_api_routes_check_the_same_in_parts(tmp_path, monkeypatch, sections) -> None:
    """Each part converts every object and validates the Routes of its range only: the
    statuses, issues and version are the whole's, also when some rules are served on one
    listener section only (looked at for shadowing section by section)."""
    whole = _same_both_ways(_kubernetes(tmp_path, sections=sections), monkeypatch)
    assert whole.built is not None and whole.built.rules == 2 * ROUTES + 3 + 1
    assert not whole.problems


def test_a_rule_shadowed_from_the_other_part_in_a_section_is_reported(
        tmp_path, monkeypatch) -> None:
    """A rule of the first part takes every request of a rule of the second part on the
    one listener section both are served on: the parts are not merged, the whole reports
    it."""
    shadowing = _http_route("a-first", 0, section="api.v1", path="/r028/api")
    whole = _same_both_ways(_kubernetes(tmp_path, shadowing, sections=True), monkeypatch,
                            merged=False)
    assert any("never matches" in str(p) and "r028" in str(p) for p in whole.problems), \
        whole.problems


def test_each_part_validates_the_converted_routes_of_its_range(tmp_path, monkeypatch) -> None:
    from propylon.config import gatewayapi

    folder = _kubernetes(tmp_path)
    resources = load_paths([folder]).resources
    validated: list[tuple[str, str]] = []

    def counted(data: dict[str, Any]) -> Any:
        made = converted(data)
        validated.append((made.kind, made.key))
        return made

    converted = gatewayapi.converted_resource
    monkeypatch.setattr(gatewayapi, "converted_resource", counted)
    keys = [f"shop/{'api.' if i % 5 == 0 else ''}r{i:03d}" for i in range(ROUTES)]
    ranges = route_ranges(keys, (0.5, 0.5))
    books = []
    for part in ranges:
        validated.clear()
        books.append(translate_booked(resources, routes=part))
        routes = [key for kind, key in validated if kind == "Route"]
        assert routes and all(key in part for key in routes)
        assert not books[-1].expansion.differs
    # every converted Route is known to each part, validated or outlined
    for booked in books:
        assert len(booked.inventory.routes) == ROUTES + 3 + 1


@pytest.mark.parametrize("where", [3, ROUTES - 3])
def test_a_route_object_that_does_not_validate_is_reported_as_the_whole_reports_it(
        tmp_path, monkeypatch, where) -> None:
    """A rule whose path is no path (Kubernetes takes it; a Route does not): its rule
    answers 500 and its object is PartiallyInvalid, from whichever part validates it; the
    parts then differ, and the whole is checked."""
    broken = _http_route(f"r{where:03d}b", where, path="no-slash").replace(
        "name: orders.v1", "name: broken")
    folder = _kubernetes(tmp_path, broken)
    whole = _same_both_ways(folder, monkeypatch, merged=None)
    assert any(f"r{where:03d}b" in str(p) for p in whole.problems), whole.problems


@pytest.mark.parametrize("where", [3, ROUTES - 3])
def test_route_objects_and_routes_failing_validation_are_contained_in_parts(
        tmp_path, monkeypatch, where) -> None:
    """Gateway API input with an HTTPRoute whose rules are not a list, and a native Route of
    the same range with an unknown field: each contained by the part that validates it,
    and the parts merge to what the whole reports."""
    broken = _http_route(f"r{where:03d}b", where).replace(
        "name: orders.v1", "name: broken").replace("  rules:", "  rules: 7\n  was:", 1)
    route = r.dump(r.route(f"r{where:03d}c", namespace="shop", rules=[
        r.rule({"prefix": f"/n{where}"}, directResponse={"status": 200})]))
    route = route.replace("spec:", "spec:\n  colour: red", 1)
    whole = _same_both_ways(_kubernetes(tmp_path, broken, route), monkeypatch)
    text = "\n".join(str(p) for p in whole.problems)
    assert f"r{where:03d}b" in text and "colour" in text, text


def _route_with(name: str, rule: str) -> str:
    """An HTTPRoute of a rule to ``echo`` and ``rule`` (its paths under /NAME)."""
    rule = rule.replace("NAME", name)
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{{name: edge, namespace: infra}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]
      backendRefs: [{{name: echo, port: 80}}]
    - {rule}
"""


def test_what_each_part_finds_converting_its_route_objects_is_reported(
        tmp_path, monkeypatch) -> None:
    """A part converts the rules of the route objects of its range only: what it finds
    there (a backend not found, an unsupported filter) is put where the whole's conversion
    reports it, and the parts are merged."""
    missing = ("{matches: [{path: {type: Exact, value: /NAME/m}}],"
               " backendRefs: [{name: gone, port: 80}]}")
    unsupported = ("{matches: [{path: {type: Exact, value: /NAME/u}}],"
                   " filters: [{type: ExtensionRef}], backendRefs: [{name: echo, port: 80}]}")
    extra = [_route_with(f"r{i:03d}b", missing) for i in (2, ROUTES - 2)]
    extra += [_route_with(f"r{i:03d}c", unsupported) for i in (4, ROUTES - 4)]
    whole = _same_both_ways(_kubernetes(tmp_path, *extra), monkeypatch)
    found = [str(p) for p in whole.problems]
    for i in (2, ROUTES - 2):
        assert any(f"r{i:03d}b" in p and "BackendNotFound" in p for p in found), found
    for i in (4, ROUTES - 4):
        assert any(f"r{i:03d}c" in p and "ExtensionRef" in p for p in found), found


@pytest.mark.parametrize("where", [3, ROUTES - 3])
def test_a_service_only_an_outlined_rule_names_is_not_made_by_the_parts(
        tmp_path, monkeypatch, where) -> None:
    """The only reference to Service ``other`` is in a rule whose conversion stops at an
    unsupported filter: the whole makes no Upstream of it, the part that outlines that
    object reads the reference all the same; the parts are not merged."""
    rule = ("{matches: [{path: {type: Exact, value: /NAME/u}}], filters: [{type: ExtensionRef}],"
            " backendRefs: [{name: other, port: 81}]}")
    endpoints = """---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other-1, namespace: shop, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{port: 8001}]
endpoints: [{addresses: [127.0.0.2], conditions: {ready: true}}]
"""
    whole = _same_both_ways(_kubernetes(tmp_path, _route_with(f"r{where:03d}b", rule),
                                        endpoints), monkeypatch, merged=False)
    assert whole.built is not None


def test_ingresses_check_the_same_in_parts(tmp_path, monkeypatch) -> None:
    """Ingresses of two hosts (a Route each): each part converts every Ingress and
    validates the Routes of its range."""
    backend = "{service: {name: echo, port: {number: 80}}}"
    ingresses = "".join(f"""---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: i{i:03d}, namespace: shop}}
spec:
  ingressClassName: propylon
  rules:
    - host: a{i}.test
      http:
        paths: [{{path: /a, pathType: Prefix, backend: {backend}}}]
    - host: b{i}.test
      http:
        paths: [{{path: /b, pathType: Exact, backend: {backend}}}]
""" for i in range(ROUTES))
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(_K8S_GATEWAY + _INGRESS_GATEWAY)
    (folder / "ingresses.yaml").write_text(ingresses)
    whole = _same_both_ways(folder, monkeypatch)
    assert whole.built is not None and whole.built.rules == 2 * ROUTES
    assert not whole.problems


def test_a_route_object_whose_route_name_is_taken_checks_the_same_in_parts(
        tmp_path, monkeypatch) -> None:
    """A native Route of the name an HTTPRoute's Route would have, in each range: the
    HTTPRoute is not converted (its name is taken), as in the whole."""
    taken = r.dump(*[r.route(name, namespace="shop", rules=[
        r.rule({"prefix": f"/native-{name}"}, directResponse={"status": 200})])
        for name in ("r001", f"r{ROUTES - 1:03d}")])
    whole = _same_both_ways(_kubernetes(tmp_path, "---\n" + taken), monkeypatch)
    found = [str(p) for p in whole.problems]
    assert any("r001" in p and "already defined" in p for p in found), found


def test_documents_of_odd_kinds_and_api_versions_are_reported(tmp_path, monkeypatch) -> None:
    """A document whose kind or apiVersion is a list or a mapping among many HTTPRoutes: the
    split reads every document's key first, and reports it as the whole does."""
    odd = "---\napiVersion: {a: 1}\nkind: [HTTPRoute]\nmetadata: {name: x, namespace: shop}\n"
    odd += "---\napiVersion: gateway.networking.k8s.io/v1\nkind: {b: 2}\nmetadata: {name: y}\n"
    whole = _same_both_ways(_kubernetes(tmp_path, odd), monkeypatch, merged=None)
    assert whole.problems and whole.built is None


def test_a_sectioned_gateway_reports_its_buckets_only_if_each_section_kept_them(
        tmp_path) -> None:
    from propylon.translate import shadows

    resources = load_paths([_kubernetes(tmp_path, sections=True)]).resources
    translate_booked(resources)
    reported = shadows.buckets_reported("infra/edge")
    assert reported is not None and reported[0] and not reported[1]
    section_keys = shadows._SECTIONS["infra/edge"]
    assert len(section_keys) == 2  # web, api.v1
    del shadows._LAST[section_keys[1]]  # as when a section's rules could not be kept
    assert shadows.buckets_reported("infra/edge") is None


def test_a_gateway_no_longer_sectioned_reports_none_of_its_old_sections(tmp_path) -> None:
    """Looked at by section, then (its listeners merged) as a whole whose rules were not
    kept: nothing is reported, never the sections' buckets of the translation before."""
    from propylon.translate import shadows

    (tmp_path / "sections").mkdir()
    (tmp_path / "whole").mkdir()
    translate_booked(load_paths([_kubernetes(tmp_path / "sections", sections=True)]).resources)
    assert shadows._SECTIONS.get("infra/edge")
    translate_booked(load_paths([_kubernetes(tmp_path / "whole")]).resources)
    assert shadows.buckets_reported("infra/edge") is not None
    del shadows._LAST["infra/edge"]  # as when the whole's rules could not be kept
    assert shadows.buckets_reported("infra/edge") is None
