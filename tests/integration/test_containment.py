"""Containment of invalid resources in standalone mode (issue #15 item 4), over the wire.

A resource that fails schema validation is contained like one that fails resolution: its own
matches answer the Gateway's ``invalidRouteResponse`` (or it is left out when nothing can be
recovered), every other resource keeps serving, at start-up and across reloads. A broken
Gateway policy, or an invalid Gateway, disables that Gateway only: its listeners answer 503.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.net import free_port, poll_until
from tests.support.upstream import ScriptedUpstream

INVALID = {"status": 502, "body": "team route broken"}



def answer(port: int, path: str, host: str) -> tuple[int, bytes]:
    response = roundtrip(port, "GET", path, host=host)
    return response.status, response.body


def teams(port: int, upstream: int, broken_rule: dict[str, Any]) -> str:
    """Team A's Route (``broken_rule`` at /a on a.test) next to team B's valid one."""
    return r.dump(
        r.gateway(port, routeSelector={"namespaces": ["*"]}, invalidRouteResponse=INVALID),
        r.route("a", namespace="team-a", hostnames=["a.test"], rules=[
            broken_rule, r.rule({"prefix": "/fine"}, directResponse={"status": 200})]),
        r.route("b", namespace="team-b", hostnames=["b.test"],
                rules=[r.rule(forward=r.forward("app"))]),
        r.upstream("app", upstream, namespace="team-b"),
    )


@pytest.mark.parametrize(
    ("broken_rule", "reason"),
    [
        pytest.param(r.rule({"prefix": "/a"}, forward=r.forward("app"), bogus=1),
                     "spec.rules[0].bogus: unknown field", id="unknown-field"),
        pytest.param(r.rule({"prefix": "/a"}, forward={"backends": [
            {"upstream": "app", "weight": "heavy"}]}),
            "spec.rules[0].forward.backends[0].weight: input should be a valid integer",
            id="wrong-type"),
        pytest.param(r.rule({"prefix": "/a"}, forward={"timeout": "5s"}),
                     "spec.rules[0].forward.backends: required field is missing",
                     id="missing-required-field"),
    ],
)
def test_start_up_with_a_schema_invalid_route_serves_the_rest(
    gateways, upstreams, broken_rule, reason
) -> None:
    app = upstreams("app")
    gw = gateways(lambda port: teams(port, app.port, broken_rule))
    assert answer(gw.port, "/a/x", "a.test") == (502, b"team route broken")
    # the whole Route is Invalid, as when a reference does not resolve
    assert answer(gw.port, "/fine", "a.test") == (502, b"team route broken")
    assert answer(gw.port, "/elsewhere", "a.test")[0] == 404  # only its own matches
    response = roundtrip(gw.port, "GET", "/orders", host="b.test")
    assert response.status == 200 and response.header("x-upstream") == "app"
    route = gw.statuses()["Route team-a/a"]
    assert route["state"] == "Invalid"
    assert any(reason in r for r in route["reasons"]), route
    assert gw.statuses()["Route team-b/b"]["state"] == "Accepted"
    warnings = gw.stats()["warnings"]
    assert any(w.startswith(f"{gw.config_file}:") and reason in w for w in warnings), warnings


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        pytest.param({"name": "Team_A_Route", "namespace": "team-a"}, "team-a/Team_A_Route",
                     id="bad-name"),
        pytest.param({"name": "a", "namespace": "Team_A"}, "Team_A/a", id="bad-namespace"),
        pytest.param({"name": "a", "namespace": "team-a", "labels": ["team-a"]}, "team-a/a",
                     id="bad-labels"),
    ],
)
def test_a_route_with_invalid_metadata_answers_the_invalid_route_response(
    gateways, upstreams, metadata, key
) -> None:
    """Invalid metadata is a schema error like any other: the Route's own matches answer the
    invalidRouteResponse under the key it was written with (not 404), the rest serves."""
    app = upstreams("app")

    def config(port: int) -> str:
        text = teams(port, app.port, r.rule({"prefix": "/a"}, forward=r.forward("app")))
        docs = [doc for doc in yaml.safe_load_all(text) if doc["metadata"]["name"] != "a"]
        bad = r.route("a", namespace="team-a", hostnames=["a.test"],
                      rules=[r.rule({"prefix": "/a"}, forward=r.forward("app"))])
        return r.dump(*docs, {**bad, "metadata": metadata})

    gw = gateways(config)
    assert answer(gw.port, "/a/x", "a.test") == (502, b"team route broken")
    assert answer(gw.port, "/elsewhere", "a.test")[0] == 404  # only its own matches
    response = roundtrip(gw.port, "GET", "/orders", host="b.test")
    assert response.status == 200 and response.header("x-upstream") == "app"
    route = gw.statuses()[f"Route {key}"]
    assert route["state"] == "Invalid"
    assert any("metadata." in reason for reason in route["reasons"]), route


def _team_c(body: str, extra: str = "") -> str:
    """Team C's Route, its ``directResponse`` body written as ``body`` (then ``extra``)."""
    return f"""\
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: c, namespace: team-c}}
spec:
  hostnames: [c.test]
  rules:
    - matches: [{{path: {{prefix: /c}}}}]
      directResponse: {{status: 200, body: {body}}}{extra}
"""


@pytest.mark.parametrize(
    ("team_c", "reason", "break_team_a"),
    [
        # a key written twice (a merge gone wrong)
        pytest.param(_team_c("c", "\n      directResponse: {status: 200, body: c2}"),
                     'spec.rules[0]: duplicate key "directResponse"',
                     ("namespace: team-a\n", "namespace: team-a\n  namespace: team-a\n"),
                     id="duplicate-key"),
        # a tag YAML does not define (``!secret``, CloudFormation's ``!Ref``)
        pytest.param(_team_c("!secret c-body"),
                     "spec.rules[0].directResponse.body: unknown YAML tag '!secret'",
                     ("body: a", "body: !Ref a"), id="unknown-tag"),
    ],
)
def test_a_document_error_is_contained_in_its_resource(
    gateways, upstreams, team_c: str, reason: str, break_team_a: tuple[str, str]
) -> None:
    """An error the parser finds in a document whose resource is known is an error of that
    resource, contained as a schema error: the file's and the other teams' resources keep
    serving (the whole file used to be refused: the gateway did not start, and a reload was
    refused for every team)."""
    app = upstreams("app")
    good = r.rule({"prefix": "/a"}, directResponse={"status": 200, "body": "a"})
    gw = gateways(lambda port: teams(port, app.port, good) + "---\n" + team_c, watch=False)
    assert answer(gw.port, "/c", "c.test") == (502, b"team route broken")
    assert answer(gw.port, "/a", "a.test") == (200, b"a")
    route = gw.statuses()["Route team-c/c"]
    assert route["state"] == "Invalid"
    assert any(reason in text for text in route["reasons"]), route
    # a reload: team A makes the same mistake in its Route while team B adds a Route
    gw.write_config(lambda port: teams(port, app.port, good).replace(*break_team_a, 1))
    gw.write_config(r.dump(r.route("b-new", namespace="team-b", hostnames=["new.test"],
                                   rules=[r.rule(forward=r.forward("app"))])), "team-b.yaml")
    version = gw.version()
    gw.signal(signal.SIGHUP)
    poll_until(lambda: gw.version() != version, 10, message="the reload installed")
    assert roundtrip(gw.port, "GET", "/new", host="new.test").status == 200
    assert answer(gw.port, "/a", "a.test") == (502, b"team route broken")
    assert gw.statuses()["Route team-a/a"]["state"] == "Invalid"


def test_a_rule_whose_matches_cannot_be_read_is_left_out(gateways, upstreams) -> None:
    app = upstreams("app")
    unreadable = r.rule({"prefix": "/a"}, directResponse={"status": 200})
    unreadable["matches"] = [{"path": {"prefix": ["/a"]}}]
    gw = gateways(lambda port: teams(port, app.port, unreadable))
    assert answer(gw.port, "/a", "a.test")[0] == 404  # what it matched is unknown
    assert answer(gw.port, "/fine", "a.test") == (502, b"team route broken")
    assert roundtrip(gw.port, "GET", "/", host="b.test").status == 200
    assert gw.statuses()["Route team-a/a"]["state"] == "Invalid"


def test_a_reload_installs_other_teams_changes_next_to_a_broken_route(
    gateways, upstreams
) -> None:
    """Team A breaks its Route while team B adds one, in the same reload (one SIGHUP)."""
    app = upstreams("app")
    good = r.rule({"prefix": "/a"}, directResponse={"status": 200, "body": "a"})
    gw = gateways(lambda port: teams(port, app.port, good), watch=False)
    assert answer(gw.port, "/a", "a.test") == (200, b"a")
    broken = r.rule({"prefix": "/a"}, directResponse={"status": "two hundred"})
    gw.write_config(lambda port: teams(port, app.port, broken))
    gw.write_config(r.dump(r.route("b-new", namespace="team-b", hostnames=["new.test"],
                                   rules=[r.rule(forward=r.forward("app"))])), "team-b.yaml")
    version = gw.version()
    gw.signal(signal.SIGHUP)
    poll_until(lambda: gw.version() != version, 10, message="the reload installed")
    assert gw.reloads() == (1, 0)
    response = roundtrip(gw.port, "GET", "/new", host="new.test")
    assert response.status == 200 and response.header("x-upstream") == "app"
    assert answer(gw.port, "/a", "a.test") == (502, b"team route broken")
    assert gw.statuses()["Route team-a/a"]["state"] == "Invalid"


def two_gateways(edge: dict[str, Any], other_port: int, *extra: dict[str, Any]) -> str:
    """Gateway ``infra/edge`` (as given) and ``infra/other`` on ``other_port``, each with a
    direct-response Route."""
    other = r.gateway(other_port, name="other", namespace="infra",
                      routeSelector={"namespaces": ["other"]})
    return r.dump(
        edge, other,
        r.route("edge", namespace="infra", rules=[r.rule(directResponse={"status": 200,
                                                                           "body": "edge"})]),
        r.route("other", namespace="other", rules=[r.rule(directResponse={"status": 200,
                                                                            "body": "other"})]),
        *extra,
    )


BROKEN_RATE_LIMIT = {"rateLimit": {"limits": [{"requests": "many", "per": "1s"}]}}
EDGE_TARGET = [{"kind": "Gateway", "name": "edge"}]


@pytest.mark.parametrize(
    "edge",
    [
        pytest.param(lambda port: (r.gateway(port, name="edge", namespace="infra",
                                             policies=[BROKEN_RATE_LIMIT]), ()),
                     id="inline-policy-wrong-type"),
        pytest.param(lambda port: (r.gateway(port, name="edge", namespace="infra"), (
            r.policy("limits", EDGE_TARGET, namespace="infra", enforced=True,
                     **BROKEN_RATE_LIMIT),)), id="policy-resource-wrong-type"),
        pytest.param(lambda port: (r.gateway(port, name="edge", namespace="infra"), (
            r.policy("auth", EDGE_TARGET, namespace="infra", enforced=True,
                     apiKey={"in": "header", "nmae": "x-key"}),)),
                     id="policy-resource-unknown-field"),
        pytest.param(lambda port: (r.gateway(port, name="edge", namespace="infra"), (
            r.policy("headers", [{"kind": "Gateway", "name": "edge", "sectionName": "x"}],
                     namespace="infra", **r.headers_policy(response={"set": {"x": "1"}})),)),
                     id="policy-resource-resolution"),
        pytest.param(lambda port: (r.gateway(port, name="edge", namespace="infra",
                                             trustedProxies=["not-a-cidr"]), ()),
                     id="invalid-gateway"),
        pytest.param(lambda port: (r.gateway(port, name="edge", namespace="infra", policies=[
            {"jwt": {"keys": [{"file": "missing.pem", "algorithm": "RS256"}]}}]), ()),
                     id="policy-that-cannot-be-built"),
    ],
)
def test_a_broken_gateway_policy_disables_that_gateway_only(
    gateways, edge: Callable[[int], tuple[dict[str, Any], tuple[dict[str, Any], ...]]]
) -> None:
    other_port = free_port()
    gw = gateways(lambda port: two_gateways(edge(port)[0], other_port, *edge(port)[1]))
    for path in ("/", "/anything"):  # fail closed: never served without its policy
        assert answer(gw.port, path, "edge.test") == (503, b"gateway unavailable")
    assert answer(other_port, "/", "other.test") == (200, b"other")
    gateway = gw.statuses()["Gateway infra/edge"]
    assert gateway["state"] == "Invalid", gateway
    assert any("the Gateway is disabled" in reason for reason in gateway["reasons"]), gateway
    assert gw.statuses()["Gateway infra/other"]["state"] == "Accepted"


def test_another_namespace_cannot_disable_a_gateway(gateways) -> None:
    """A team's broken Policy naming the platform's Gateway is that team's problem only."""
    other_port = free_port()
    gw = gateways(lambda port: two_gateways(
        r.gateway(port, name="edge", namespace="infra"), other_port,
        r.policy("grab", [{"kind": "Gateway", "name": "edge", "namespace": "infra"}],
                 namespace="other", **BROKEN_RATE_LIMIT)))
    assert answer(gw.port, "/", "edge.test") == (200, b"edge")
    assert gw.statuses()["Policy other/grab"]["state"] == "Invalid"


def test_a_broken_policy_fails_its_route_closed(gateways, upstreams) -> None:
    app = upstreams("app")
    good = r.rule({"prefix": "/a"}, directResponse={"status": 200, "body": "a"})
    gw = gateways(lambda port: teams(port, app.port, good) + "---\n" + r.dump(
        r.policy("auth", [{"kind": "Route", "name": "a"}], namespace="team-a",
                 jwt={"issuerr": "x"})))
    assert answer(gw.port, "/a", "a.test") == (502, b"team route broken")
    assert answer(gw.port, "/fine", "a.test") == (502, b"team route broken")
    assert roundtrip(gw.port, "GET", "/", host="b.test").status == 200
    route = gw.statuses()["Route team-a/a"]
    assert route["state"] == "Invalid"
    assert any("Policy team-a/auth targeting it is invalid" in x for x in route["reasons"])


def test_a_route_policy_that_cannot_be_built_replaces_its_route(gateways, upstreams) -> None:
    app = upstreams("app")
    jwt = {"jwt": {"keys": [{"file": "missing.pem", "algorithm": "RS256"}]}}
    protected = r.rule({"prefix": "/a"}, directResponse={"status": 200}, policies=[jwt])
    gw = gateways(lambda port: teams(port, app.port, protected))
    assert answer(gw.port, "/a", "a.test") == (502, b"team route broken")
    assert roundtrip(gw.port, "GET", "/", host="b.test").status == 200
    route = gw.statuses()["Route team-a/a"]
    assert route["state"] == "Invalid"
    assert any("missing.pem" in reason for reason in route["reasons"]), route


@pytest.mark.parametrize("workers", [1, 2])
def test_an_upstream_whose_tls_files_cannot_be_loaded_is_contained(
        gateways, upstreams, tmp_path: Path, workers: int) -> None:
    """An Upstream whose CA file is missing, which a proxy's compilation refuses (and with it
    the whole configuration: before, the gateway did not start): Invalid, the Routes that
    forward to it answer the invalid route response, every other Route serves. Once the
    file is there, a reload serves them again (the check looks at the files anew)."""
    app = upstreams("app")
    ca = tmp_path / "partner-ca.pem"

    def config(port: int) -> str:
        return teams(port, app.port, r.rule({"prefix": "/a"}, forward=r.forward("partner"))) + (
            "---\n" + r.dump(r.upstream("partner", app.port, namespace="team-a",
                                         tls={"sni": "partner.test", "caFile": str(ca)})))

    gw = gateways(config, workers=workers)
    assert answer(gw.port, "/a", "a.test") == (502, b"team route broken")
    assert answer(gw.port, "/fine", "a.test") == (502, b"team route broken")
    assert roundtrip(gw.port, "GET", "/", host="b.test").status == 200
    statuses = gw.statuses()
    upstream, route = statuses["Upstream team-a/partner"], statuses["Route team-a/a"]
    assert upstream["state"] == "Invalid" and any(
        "tls.caFile: cannot load" in x and str(ca) in x for x in upstream["reasons"]), upstream
    assert route["state"] == "Invalid" and any(
        "Upstream team-a/partner" in x for x in route["reasons"]), route
    assert statuses["Route team-b/b"]["state"] == "Accepted"
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", ca)
    gw.signal(signal.SIGHUP)
    poll_until(lambda: gw.statuses()["Route team-a/a"]["state"] == "Accepted", 30,
               message="the Route served once the CA file is there")
    assert gw.statuses()["Upstream team-a/partner"]["state"] == "Accepted"
    assert answer(gw.port, "/fine", "a.test")[0] == 200


def test_a_reload_that_breaks_a_gateway_policy_fails_closed_and_recovers(gateways) -> None:
    other_port = free_port()

    def config(section: dict[str, Any]) -> Callable[[int], str]:
        return lambda port: two_gateways(r.gateway(port, name="edge", namespace="infra"),
                                         other_port,
                                         r.policy("p", EDGE_TARGET, namespace="infra",
                                                  **section))

    fine = r.headers_policy(response={"set": {"x-edge": "1"}})
    gw = gateways(config(fine), watch=True)
    assert roundtrip(gw.port, "GET", "/").header("x-edge") == "1"
    gw.write_config(config({"headers": {"response": {"sett": {"x-edge": "1"}}}}))
    poll_until(lambda: answer(gw.port, "/", "edge.test")[0] == 503, 10, message="fail closed")
    assert answer(other_port, "/", "other.test") == (200, b"other")
    gw.write_config(config(fine))
    poll_until(lambda: answer(gw.port, "/", "edge.test") == (200, b"edge"), 10,
               message="served again once fixed")


def test_run_refused_for_an_invalid_gateway_says_why(tmp_path) -> None:
    """The only Gateway fails validation: nothing can be served and the gateway does not
    start, and the refusal names the Gateway's error (it said only "no Gateway resource
    found")."""
    import subprocess
    import sys

    from tests.support.gateway import REPO

    gateway = r.gateway(free_port())
    gateway["spec"]["listeners"][0]["colour"] = "red"
    config = tmp_path / "config.yaml"
    config.write_text(r.dump(gateway))
    done = subprocess.run([sys.executable, "-m", "propylon", "run", str(config),
                           "--admin", "off"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "spec.listeners[0].colour: unknown field" in done.stderr, done.stderr
    assert "nothing to serve" in done.stderr, done.stderr


def test_validate_still_refuses_a_schema_error(tmp_path) -> None:
    import subprocess
    import sys

    from tests.support.gateway import REPO

    config = tmp_path / "config.yaml"
    config.write_text(teams(8080, 9090, r.rule({"prefix": "/a"}, forward=r.forward("app"),
                                                bogus=1)))
    done = subprocess.run([sys.executable, "-m", "propylon", "validate", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"{config}:" in done.stdout + done.stderr
    assert "spec.rules[0].bogus: unknown field" in done.stdout + done.stderr


def test_an_upstream_team_sees_its_rules_replaced(gateways, upstreams) -> None:
    """A schema-invalid Upstream is left out; the rules forwarding to it are replaced."""
    app: ScriptedUpstream = upstreams("app")
    good = r.rule({"prefix": "/a"}, directResponse={"status": 200, "body": "a"})
    gw = gateways(lambda port: teams(port, app.port, good) + "---\n" + r.dump(
        r.route("c", namespace="team-c", hostnames=["c.test"],
                rules=[r.rule(forward=r.forward("svc"))]),
        r.upstream("svc", app.port, namespace="team-c", connectTimeout="soon")))
    assert answer(gw.port, "/", "c.test") == (502, b"team route broken")
    assert roundtrip(gw.port, "GET", "/", host="b.test").status == 200
    assert gw.statuses()["Upstream team-c/svc"]["state"] == "Invalid"
    assert gw.statuses()["Route team-c/c"]["state"] == "Invalid"
