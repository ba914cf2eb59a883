"""Tenant isolation over the wire: on a Gateway that admits every namespace, a team's Route
reaches another team's Upstream only with that Upstream's grant (``allowedNamespaces``);
without it the rule answers the invalid-route response and the upstream sees nothing."""

from __future__ import annotations

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway
from tests.support.upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def ups(module_upstreams) -> dict[str, ScriptedUpstream]:
    return {name: module_upstreams(name) for name in ("payroll", "team-a-app")}


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    return module_gateways(lambda port: r.dump(
        r.gateway(port, namespace="infra", routeSelector={"namespaces": ["*"]}),
        # team-a has no grant: a backend or a mirror into team-b is refused
        r.route("grabby", namespace="team-a", hostnames=["grabby.test"],
                rules=[r.rule(forward=r.forward("team-b/payroll"))]),
        r.route("copier", namespace="team-a", hostnames=["copier.test"], rules=[
            r.rule(forward=r.forward("app", mirror={"upstream": "team-b/payroll"}))]),
        r.route("own", namespace="team-a", hostnames=["own.test"],
                rules=[r.rule(forward=r.forward("app"))]),
        # team-c is granted
        r.route("granted", namespace="team-c", hostnames=["granted.test"],
                rules=[r.rule(forward=r.forward("team-b/payroll"))]),
        r.upstream("payroll", ups["payroll"].port, namespace="team-b",
                   allowedNamespaces=["team-c"]),
        r.upstream("app", ups["team-a-app"].port, namespace="team-a"),
    ))


@pytest.fixture(autouse=True)
def _reset(ups) -> None:
    for upstream in ups.values():
        upstream.reset()


def test_admitting_every_namespace_does_not_open_other_teams_upstreams(
    gateways, upstreams
) -> None:
    """The issue's case, in YAML any earlier version accepted: team-a forwards to team-b's
    payroll service on a Gateway admitting "*"; team-b granted nothing."""
    payroll = upstreams("payroll")
    gateway = gateways(lambda port: r.dump(
        r.gateway(port, namespace="infra", routeSelector={"namespaces": ["*"]}),
        r.route("grabby", namespace="team-a",
                rules=[r.rule(forward=r.forward("team-b/payroll"))]),
        r.upstream("payroll", payroll.port, namespace="team-b"),
    ))
    response = roundtrip(gateway.port, "GET", "/salaries", host="any.test")
    assert (response.status, response.body) == (500, b"route unavailable")
    assert not payroll.requests


@pytest.mark.parametrize("host", ["grabby.test", "copier.test"])
def test_reference_without_a_grant_answers_the_invalid_route_response(gw, ups, host) -> None:
    response = roundtrip(gw.port, "GET", "/salaries", host=host)
    assert (response.status, response.body) == (500, b"route unavailable")
    assert not ups["payroll"].requests
    assert not ups["team-a-app"].requests  # the whole rule is replaced, not just the mirror
    warnings = " ".join(gw.stats()["warnings"])
    assert 'does not grant references from namespace "team-a"' in warnings


def test_granted_namespace_reaches_the_upstream(gw, ups) -> None:
    response = roundtrip(gw.port, "GET", "/salaries?month=5", host="granted.test")
    assert response.status == 200, response
    assert response.header("x-upstream") == "payroll"
    assert ups["payroll"].last.target == "/salaries?month=5"


def test_other_routes_of_the_refused_team_keep_serving(gw, ups) -> None:
    response = roundtrip(gw.port, "GET", "/x", host="own.test")
    assert response.status == 200, response
    assert ups["team-a-app"].last.target == "/x"
    assert not ups["payroll"].requests
