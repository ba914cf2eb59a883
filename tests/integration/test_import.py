"""``propylon import --from ...``: small realistic configurations of each product (written
from their documented examples, tests/fixtures/import/) import with warnings for what has no
equivalent, the output validates cleanly, and a real gateway serves it to a real upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.client import roundtrip
from tests.support.gateway import propylon
from tests.support.upstream import Reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "import"



def imported(source: str, tmp_path: Path, upstream_port: int,
             name: str | None = None) -> tuple[list[Any], str]:
    """The fixture ``name`` (default: ``source``) imported from ``source``."""
    fixture = tmp_path / f"{name or source}.yaml"
    fixture.write_text((FIXTURES / f"{name or source}.yaml").read_text()
                       .replace("UPSTREAM_PORT", str(upstream_port)))
    result = propylon("import", "--from", source, str(fixture))
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout)), result.stderr


def served_on(docs: list[Any], port: int) -> str:
    """The imported documents with the Gateway on a test port and loopback."""
    for doc in docs:
        if doc["kind"] == "Gateway":
            doc["spec"]["listeners"] = [{"name": "http", "port": port,
                                         "address": "127.0.0.1"}]
    return yaml.safe_dump_all(docs, sort_keys=False)


CASES = [
    pytest.param("kong", ["plugin acme is not imported", "consumers are not imported"],
                 "shop.example.com", "/orders/42", "/v1/42", ("x-source", "kong-import"),
                 id="kong"),
    pytest.param("apisix", ["checks is not imported", "plugin prometheus is not imported"],
                 "shop.example.com", "/orders/7", "/orders/7", ("x-source", "apisix-import"),
                 id="apisix"),
    pytest.param("gloo", ["healthChecks is not imported", "route option cors"],
                 "shop.example.com", "/orders/1", "/v1/orders/1", ("x-source", "gloo-import"),
                 id="gloo"),
    pytest.param("flex", ["http-basic-authentication-flex is not imported"],
                 "any.test", "/orders/3", "/orders/3", ("x-source", "flex-import"), id="flex"),
]


@pytest.mark.parametrize(("source", "warnings", "host", "target", "upstream_target",
                          "header"), CASES)
def test_import_validate_and_serve(source, warnings, host, target, upstream_target, header,
                                   tmp_path, gateways, upstreams) -> None:
    upstream = upstreams(source)
    docs, stderr = imported(source, tmp_path, upstream.port)
    for warning in warnings:
        assert warning in stderr, stderr
    assert all(line.startswith("warning: ") and f"{source}.yaml:" in line
               for line in stderr.splitlines()), stderr
    gateway = gateways(lambda port: served_on(docs, port), wait=False)  # starts meanwhile
    checked = propylon("validate", str(gateway.config_dir))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    gateway.wait_ready()
    response = roundtrip(gateway.port, "GET", target, {"host": host})
    assert response.status == 200, response
    assert upstream.last.target == upstream_target
    assert upstream.last.header(header[0]) == header[1]


def test_gloo_delegation_and_redirect(tmp_path, gateways, upstreams) -> None:
    docs, _ = imported("gloo", tmp_path, upstreams("gloo").port)
    gateway = gateways(lambda port: served_on(docs, port))
    team = roundtrip(gateway.port, "GET", "/team/status", {"host": "shop.example.com"})
    assert (team.status, team.body) == (200, b"team ok")
    old = roundtrip(gateway.port, "GET", "/old", {"host": "shop.example.com"})
    assert old.status == 301 and old.header("location").endswith("/new")


def test_kong_regex_paths_and_headers_match_as_in_kong(tmp_path, gateways, upstreams) -> None:
    # Kong anchors a ~ path at the start only and takes (?<name>...); it compares header
    # values lower-cased (~* values are regexes found anywhere in the value)
    upstream = upstreams("kong")
    docs, stderr = imported("kong", tmp_path, upstream.port, "kong-matching")
    # the one warning: a plain path is a string prefix in Kong (/v also routes /vx)
    assert stderr.count("warning:") == 1 and "plain string prefix" in stderr, stderr
    gateway = gateways(lambda port: served_on(docs, port), wait=False)  # starts meanwhile
    checked = propylon("validate", str(gateway.config_dir))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    gateway.wait_ready()

    def status(target: str, **headers: str) -> int:
        return roundtrip(gateway.port, "GET", target, headers).status

    assert status("/users/42") == 200 and status("/users/42/profile") == 200
    assert status("/users/x") == 404 and status("/v1/users/42") == 404
    assert status("/status/200/extra") == 200 and status("/xstatus/200") == 404
    assert status("/only") == 200 and status("/only/more") == 404
    assert status("/starts") == 200 and status("/starts/here") == 200
    mobile = {"x-client": "Mobile-7 (iOS)"}
    assert status("/v", **{"x-version": "V2"}, **mobile) == 200
    assert status("/v", **{"x-version": "v2"}, **mobile) == 200
    assert status("/v", **{"x-version": "V3"}, **mobile) == 200
    assert status("/v", **{"x-version": "v4"}, **mobile) == 404
    assert status("/v", **{"x-version": "v2", "x-client": "desktop mobile-7"}) == 404
    assert upstream.last.target == "/v"


def test_gloo_prefix_rewrite_of_exact_and_regex_matchers(tmp_path, gateways, upstreams) -> None:
    # Envoy's prefix_rewrite swaps the matched path: the whole path of an exact or regex
    # matcher (the query kept), the prefix of a prefix matcher, in one route both
    upstream = upstreams("gloo")
    docs, _ = imported("gloo", tmp_path, upstream.port, "gloo-routing")
    gateway = gateways(lambda port: served_on(docs, port), wait=False)  # starts meanwhile
    checked = propylon("validate", str(gateway.config_dir))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    gateway.wait_ready()
    for target, upstream_target in (("/old-report?x=1", "/reports/latest?x=1"),
                                    ("/items/42", "/item"), ("/legacy/a?b=c", "/v2/a?b=c"),
                                    ("/legacy-home", "/v2/")):
        assert roundtrip(gateway.port, "GET", target).status == 200, target
        assert upstream.last.target == upstream_target


def test_gloo_retry_on_is_imported(tmp_path, gateways, upstreams) -> None:
    # retryOn says what Envoy retries: retriable-4xx is 409, retriable-status-codes the
    # codes listed; what has no equivalent is a warning, and no retryOn retries nothing
    upstream = upstreams("gloo")
    docs, stderr = imported("gloo", tmp_path, upstream.port, "gloo-routing")
    assert "retryOn refused-stream is not imported" in stderr, stderr
    assert "without retryOn Envoy retries nothing" in stderr, stderr
    rules = {rule["matches"][0]["path"].get("prefix"): rule for doc in docs
             if doc["kind"] == "Route" for rule in doc["spec"]["rules"]}
    assert rules["/flaky"]["forward"]["retries"] == {
        "attempts": 2, "on": ["connect-failure"], "statuses": [409, 429],
        "backoff": {"baseInterval": "10ms", "maxInterval": "100ms"}}
    assert "retries" not in rules["/steady"]["forward"]
    gateway = gateways(lambda port: served_on(docs, port))
    for status in (429, 409):
        answers = iter([Reply(status=status), Reply(status=200)])
        upstream.reset(lambda _request, answers=answers: next(answers))
        response = roundtrip(gateway.port, "GET", "/flaky")
        assert response.status == 200 and len(upstream.requests) == 2, status


def test_gloo_routes_shadowed_in_order_are_warnings(tmp_path, gateways, upstreams) -> None:
    # Gloo answers with the first matching route, Propylon by precedence (the longest prefix
    # here): the later route answers in Propylon, which is said, naming both routes
    docs, stderr = imported("gloo", tmp_path, upstreams("gloo").port, "gloo-routing")
    warnings = [line for line in stderr.splitlines() if "comes after" in line]
    assert len(warnings) == 1, stderr
    assert warnings[0].startswith(f"warning: {tmp_path / 'gloo-routing.yaml'}:41: route 6 "
                                  "(prefix /api/users) comes after route 5 (prefix /api): ")
    assert "to keep Gloo's behaviour, remove its rule" in warnings[0]
    gateway = gateways(lambda port: served_on(docs, port))
    assert roundtrip(gateway.port, "GET", "/api/users/1").body == b"users"


def test_ingress_import(tmp_path) -> None:
    docs, stderr = imported("ingress", tmp_path, 0)
    assert "spec.tls is not supported" in stderr and "another class" in stderr
    upstreams = {d["metadata"]["name"]: d["spec"]["endpoints"] for d in docs
                 if d["kind"] == "Upstream"}
    assert upstreams["orders"] == [{"address": "orders.shop.svc.cluster.local", "port": 8080}]
    output = tmp_path / "out.yaml"
    output.write_text(yaml.safe_dump_all(docs))
    assert propylon("validate", str(output)).returncode == 0


def test_ingress_import_one_upstream_per_service_port(tmp_path, gateways, upstreams) -> None:
    # one Service used with ports 80 and 9090 (and by a port name) is one Upstream per port,
    # each path forwarding to its own; a port name is a warning with what was assumed
    docs, stderr = imported("ingress", tmp_path, 0, "ingress-ports")
    assert stderr.splitlines() == [
        f"warning: {tmp_path / 'ingress-ports.yaml'}:12: Service web port 'http' (a name) "
        "cannot be resolved from an Ingress alone: its Upstream assumes port 80 (give the "
        "Service and its EndpointSlices as Kubernetes input, or edit the Upstream's port)"]
    endpoints = {d["metadata"]["name"]: d["spec"]["endpoints"] for d in docs
                 if d["kind"] == "Upstream"}
    assert {name: [(e["address"], e["port"]) for e in found]
            for name, found in endpoints.items()} == {
        "web-80": [("web.shop.svc.cluster.local", 80)],
        "web-9090": [("web.shop.svc.cluster.local", 9090)],
        "web-http": [("web.shop.svc.cluster.local", 80)],
        "orders": [("orders.shop.svc.cluster.local", 8080)],  # one port: the simple name
        "orders-8081": [("orders.shop.svc.cluster.local", 8081)]}  # "orders" is taken
    backends = {(d["metadata"]["name"], r["matches"][0]["path"]["prefix"]):
                r["forward"]["backends"][0]["upstream"] for d in docs if d["kind"] == "Route"
                for r in d["spec"]["rules"]}
    assert backends == {("shop", "/"): "shop/web-80", ("shop", "/admin"): "shop/web-9090",
                        ("shop", "/metrics"): "shop/web-http", ("shop", "/orders"): "shop/orders",
                        ("other", "/"): "shop/orders-8081", ("other", "/admin"): "shop/web-9090"}
    # served, each Service port a real upstream: / and /admin reach different ones
    by_port = {port: upstreams(f"port-{port}") for port in (80, 9090, 8080, 8081)}
    for doc in docs:
        if doc["kind"] == "Upstream":
            port = doc["spec"]["endpoints"][0]["port"]
            doc["spec"]["endpoints"] = [{"address": "127.0.0.1", "port": by_port[port].port}]
    gateway = gateways(lambda port: served_on(docs, port), wait=False)  # starts meanwhile
    checked = propylon("validate", str(gateway.config_dir))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    gateway.wait_ready()
    for target, port in (("/", 80), ("/admin/x", 9090), ("/orders", 8080)):
        response = roundtrip(gateway.port, "GET", target, {"host": "shop.test"})
        assert (response.status, response.header("x-upstream")) == (200, f"port-{port}"), target


def test_a_document_of_another_shape_is_an_error_not_a_crash(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  - {id: 1, upstream: {nodes: [{host: a, port: x}]}}\n---\n- a\n")
    result = propylon("import", "--from", "apisix", str(bad))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {bad}:2: routes[0].upstream.nodes[0].port: must be an integer, not a string "
        "'x' (this document is not imported)",
        f"error: {bad}:4: the document must be a mapping, not a list ['a'] (this document is "
        "not imported)"]


BROKEN = {  # tests/fixtures/import/broken/SOURCE.yaml: three documents, one defect each
    "kong": [
        (8, "services[0].routes[0].paths: must be a list, not a mapping {'prefix': '/orders'}"),
        (15, "services[0].plugins[0].name: required field is missing"),
        (21, "services[0].port: must be an integer, not a string '8080'"),
    ],
    "apisix": [
        (9, "routes[0].upstream.nodes[1].host: required field is missing"),
        (13, "routes[0].uris: must be a list, not a string '/users/*'"),
        (21, "routes[0].uri: must be a string, not an integer 42"),
    ],
    "gloo": [
        (9, "spec.virtualHost.routes[0].matchers: must be a list, not a mapping "
            "{'prefix': '/orders'}"),
        (18, "spec.static.hosts[0].addr: required field is missing"),
        (25, "spec.routes[0].matchers[0].prefix: must be a string, not an integer 7"),
    ],
    "flex": [
        (11, "spec.services.orders.routes: must be a list, not a mapping "
             "{'rules': [{'path': '/orders'}]}"),
        (16, "spec.policyRef: required field is missing"),
        (24, "spec.address: must be a string, not an integer 8080"),
    ],
}


@pytest.mark.parametrize("source", sorted(BROKEN))
def test_badly_shaped_documents_are_located_errors(source) -> None:
    # a mapping where a list belongs, a required field missing, a number where a string
    # belongs (or the other way): one located error each, exit 1, never a traceback
    fixture = FIXTURES / "broken" / f"{source}.yaml"
    result = propylon("import", "--from", source, str(fixture))
    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [
        f"error: {fixture}:{line}: {message} (this document is not imported)"
        for line, message in BROKEN[source]]
    assert result.stdout == ""


@pytest.mark.parametrize(("source", "text", "product"), [
    pytest.param("kong", """_format_version: "3.0"
services:
  - name: shop
    url: http://127.0.0.1:9000
    routes:
      - {name: orders, paths: [/orders]}
      - {name: carts, paths: [/carts]}
      - {name: root, paths: [/api/]}
""", "Kong", id="kong"),
    pytest.param("apisix", """upstreams:
  - {id: 1, nodes: {"127.0.0.1:9000": 1}, type: roundrobin}
routes:
  - {id: 1, uri: /orders*, upstream_id: 1}
  - {id: 2, uri: /carts*, upstream_id: 1}
  - {id: 3, uri: /api/*, upstream_id: 1}
""", "APISIX", id="apisix"),
])
def test_a_plain_string_prefix_is_noted_once_per_file(tmp_path, source: str, text: str,
                                                      product: str) -> None:
    """Kong's plain paths, Envoy's prefix matchers and APISIX's ``/x*`` also match
    ``/xy``; imported as segment prefixes, the difference is said once per file, at the first
    path it concerns (a path ending in ``/`` is the same either way)."""
    (tmp_path / "source.yaml").write_text(text)
    result = propylon("import", "--from", source, str(tmp_path / "source.yaml"))
    assert result.returncode == 0, result.stderr
    noted = [line for line in result.stderr.splitlines() if "plain string prefix" in line]
    assert len(noted) == 1, result.stderr
    assert f"{product} matches a path like /orders " in noted[0]
    assert "source.yaml:" in noted[0]
