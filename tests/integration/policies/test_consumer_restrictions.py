"""``consumers`` restrictions of apiKey and basicAuth against a real gateway and upstream.

Before them every valid key or user passed on every route with the policy. Four Consumers:
``acme`` (tier gold), ``beta`` (tier silver), ``gamma`` (tier gold, suspended) in the default
namespace, and another ``acme`` (tier bronze) in ``team-b``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.policies._helpers import (
    EDGE_AND_ECHO,
    GatewayProc,
    Upstream,
    echoed,
    request,
)

KEYS = {"acme": "k-acme-000000001", "beta": "k-beta-000000002", "gamma": "k-gamma-00000003",
        "team-b/acme": "k-acme-b-0000004"}


def consumer(name: str, namespace: str, labels: str, key_file: str, basic: str = "") -> str:
    return f"""apiVersion: propylon.dev/v1
kind: Consumer
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  labels: {labels}
  credentials:
    apiKeys: [{{secretRef: {{file: {key_file}}}}}]
{basic}---
"""


CONSUMERS = (
    consumer("acme", "default", "{tier: gold}", "acme.key",
             "    basicAuth: [{username: alice, secretRef: {env: ALICE_PASSWORD}}]\n")
    + consumer("beta", "default", "{tier: silver}", "beta.key",
               "    basicAuth: [{username: bob, secretRef: {env: BOB_PASSWORD}}]\n")
    + consumer("gamma", "default", "{tier: gold, state: suspended}", "gamma.key")
    + consumer("acme", "team-b", "{tier: bronze}", "acme-b.key")
)

RULE = """    - matches: [{path: {prefix: PATH}}]
      forward: {backends: [{upstream: echo}]}
      policies: [{POLICY}]
"""
RULES = {
    "/gold": "apiKey: {consumers: {allowLabels: {tier: gold}, denyLabels: {state: suspended}}}",
    "/beta": "apiKey: {consumers: {allow: [beta]}}",
    "/either": "apiKey: {consumers: {allow: [beta], allowLabels: {tier: [gold, platinum]}}}",
    "/not-acme": "apiKey: {consumers: {deny: [acme]}}",
    "/not-default-acme": "apiKey: {consumers: {deny: [default/acme]}}",
    "/typo": "apiKey: {consumers: {allow: [acmee, team-c/acme], allowLabels: {teir: gold}}}",
    "/basic-silver": "basicAuth: {consumers: {allowLabels: {tier: [silver, platinum]}}}",
    "/basic-not-alice": "basicAuth: {consumers: {deny: [default/acme]}}",
}
ROUTE = ("apiVersion: propylon.dev/v1\nkind: Route\nmetadata: {name: api}\nspec:\n  rules:\n"
         + "".join(RULE.replace("PATH", path).replace("POLICY", policy)
                   for path, policy in RULES.items()))
POLICY = """---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: other}
spec:
  hostnames: [other.test]
  rules: [{forward: {backends: [{upstream: echo}]}}]
---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {name: only-zed}
spec:
  targetRefs: [{kind: Route, name: other}]
  apiKey: {consumers: {allow: [zed]}}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[GatewayProc]:
    root: Path = tmp_path_factory.mktemp("consumer-restrictions")
    files = {"acme.key": KEYS["acme"], "beta.key": KEYS["beta"], "gamma.key": KEYS["gamma"],
             "acme-b.key": KEYS["team-b/acme"]}
    config = (EDGE_AND_ECHO + CONSUMERS + ROUTE + POLICY).replace("UPSTREAM",
                                                                   str(upstream.port))
    proc = GatewayProc(root, config, files=files,
                       env={"ALICE_PASSWORD": "alice-pw", "BOB_PASSWORD": "bob-pw"})
    yield proc
    proc.stop()


def with_key(gw: GatewayProc, path: str, who: str) -> tuple[int, bytes]:
    status, _, body = request(gw.port, "GET", path, {"x-api-key": KEYS[who]})
    return status, body


EVERYONE = ["acme", "beta", "gamma", "team-b/acme"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        pytest.param("/gold", ["acme"], id="allowLabels-and-denyLabels"),
        pytest.param("/beta", ["beta"], id="allow-by-name"),
        pytest.param("/either", ["acme", "beta", "gamma"], id="allow-by-name-or-label"),
        pytest.param("/not-acme", ["beta", "gamma"], id="deny-bare-name-any-namespace"),
        pytest.param("/not-default-acme", ["beta", "gamma", "team-b/acme"],
                     id="deny-namespaced-name"),
        pytest.param("/typo", [], id="names-that-match-nobody"),
    ],
)
def test_api_key_consumer_restrictions(gw: GatewayProc, path: str, allowed: list[str]) -> None:
    for who in EVERYONE:
        status, body = with_key(gw, path, who)
        if who in allowed:
            assert status == 200, (who, body)
            assert echoed(body)["headers"]["x-consumer-name"] == who.rpartition("/")[2]
        else:
            assert (status, body) == (403, b"forbidden: consumer not allowed\n"), who


def test_unknown_key_is_still_401_on_a_restricted_route(gw: GatewayProc) -> None:
    assert request(gw.port, "GET", "/beta", {"x-api-key": "nobody"})[0] == 401
    assert request(gw.port, "GET", "/beta")[0] == 401


@pytest.mark.parametrize(
    ("path", "user", "password", "expected"),
    [
        pytest.param("/basic-silver", "bob", "bob-pw", 200, id="silver-allowed"),
        pytest.param("/basic-silver", "alice", "alice-pw", 403, id="gold-not-allowed"),
        pytest.param("/basic-silver", "alice", "wrong", 401, id="bad-password-still-401"),
        pytest.param("/basic-not-alice", "alice", "alice-pw", 403, id="denied-by-name"),
        pytest.param("/basic-not-alice", "bob", "bob-pw", 200, id="others-pass"),
    ],
)
def test_basic_auth_consumer_restrictions(gw: GatewayProc, path: str, user: str,
                                          password: str, expected: int) -> None:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    for _ in range(2):  # the second time from the worker's cache of accepted credentials
        status, _, body = request(gw.port, "GET", path, {"authorization": f"Basic {token}"})
        assert status == expected, body
        if expected == 200:
            seen = echoed(body)["headers"]
            assert seen["x-consumer-name"] == "beta"
            assert "authorization" not in seen


def test_policy_resource_restriction(gw: GatewayProc) -> None:
    status, _, _ = request(gw.port, "GET", "/", {"host": "other.test",
                                                 "x-api-key": KEYS["acme"]})
    assert status == 403


def reasons(gw: GatewayProc, kind: str, key: str) -> dict[str, Any]:
    config = gw.config()
    entry = next(s for s in config["statuses"] if s["kind"] == kind and s["key"] == key)
    return {"state": entry["state"], "reasons": entry["reasons"]}


def test_names_that_match_no_consumer_or_several_are_reported(gw: GatewayProc) -> None:
    route = reasons(gw, "Route", "default/api")
    assert route["state"] == "Accepted"
    field = "spec.rules[{}].policies[0].apiKey.consumers".format
    assert sorted(route["reasons"]) == sorted([
        f'{field(3)}.deny[0]: "acme" matches Consumers default/acme, team-b/acme; write '
        "namespace/name to pick one",
        f'{field(5)}.allow[0]: no Consumer named "acmee"',
        f"{field(5)}.allow[1]: no Consumer team-c/acme",
        f"{field(5)}.allowLabels: no Consumer has these labels",
    ])
    policy = reasons(gw, "Policy", "default/only-zed")
    assert policy["reasons"] == ['spec.apiKey.consumers.allow[0]: no Consumer named "zed"']
