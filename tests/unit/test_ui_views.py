"""The dashboard's rows, without sockets: texts of matches and actions, order of resources,
rates from cumulative reports, the explain form's headers."""

from __future__ import annotations

from typing import Any

import pytest

from propylon import ir
from propylon.controlplane.ui import views


@pytest.mark.parametrize(("match", "text"), [
    pytest.param(ir.MatchIR(), "path prefix /", id="default"),
    pytest.param(ir.MatchIR(ir.PathMatchIR("exact", "/a"), "GET",
                            (ir.ValueMatchIR("x-a", "1"),), (ir.ValueMatchIR("q", regex="^b"),)),
                 "GET, path exact /a, header x-a = 1, query q ~ ^b", id="everything"),
])
def test_match_text(match: ir.MatchIR, text: str) -> None:
    assert views.match_text(match) == text


@pytest.mark.parametrize(("action", "text"), [
    pytest.param(ir.ForwardIR((ir.BackendIR("s/a"),)), "forward to s/a", id="one-backend"),
    pytest.param(ir.ForwardIR((ir.BackendIR("s/a", 90), ir.BackendIR("s/b", 10)),
                              ir.RewriteIR(prefix="/")),
                 "forward to s/a (90), s/b (10), rewrite to /", id="weights-rewrite"),
    pytest.param(ir.RedirectIR(301, "https", None, 8443, "/new"),
                 "redirect 301 https://:8443/new", id="redirect"),
    pytest.param(ir.RedirectIR(), "redirect 302 (same URL)", id="redirect-same"),
    pytest.param(ir.DirectResponseIR(500), "direct response 500", id="direct"),
])
def test_action_text(action: ir.Action, text: str) -> None:
    assert views.action_text(action) == text


def test_invalid_resources_come_first() -> None:
    rows = views.resource_rows([ir.StatusIR("Route", "a/ok", "Accepted"),
                                ir.StatusIR("Upstream", "a/u", "Accepted"),
                                ir.StatusIR("Route", "a/bad", "Invalid", ("why",))])
    assert [r["key"] for r in rows] == ["a/bad", "a/ok", "a/u"]


def test_rates_come_from_growth_between_samples() -> None:
    meter = views.RateMeter(window=10.0)
    assert meter.rate("g", (100, 0), now=0.0) is None
    assert meter.rate("g", (150, 5), now=0.5) is None  # under a second: not sampled
    assert meter.rate("g", (300, 10), now=2.0) == (100.0, 5.0)
    assert meter.rate("g", (300, 10), now=20.0) == (0.0, 0.0)  # old samples dropped
    assert views.rate_text(None) == "measuring…"


def test_traffic_totals_add_every_version_and_skip_bad_reports() -> None:
    proxies: list[dict[str, Any]] = [{"health": {"traffic": {"v1": {"requests": 3, "errors5xx": 1},
                                       "v2": {"requests": 4, "errors5xx": 0}}}},
               {"health": None}, {"health": {"traffic": {"v1": 7}}}, {}]
    assert views.traffic_totals(proxies) == (7, 1)


def test_explain_headers_are_name_value_lines() -> None:
    assert views.parse_headers("X-A: 1\n\nx-b:two words ") == {"x-a": "1", "x-b": "two words"}
    with pytest.raises(ValueError, match="header line 2"):
        views.parse_headers("x-a: 1\nnot a header")


def _gateway_of(count: int) -> ir.GatewayIR:
    rules = tuple(
        ir.RuleIR(id=f"route:shop/r{i}:0", route=f"Route shop/r{i}", name=None, hostnames=(),
                  matches=(ir.MatchIR(ir.PathMatchIR("prefix", f"/items/{i}")),),
                  action=ir.DirectResponseIR(200))
        for i in range(count))
    return ir.GatewayIR(key="infra/edge", listeners=(), rules=rules, upstreams=())


def test_the_route_table_comes_in_pages() -> None:
    gateway = _gateway_of(450)
    first = views.rule_page(gateway)
    assert (first.start, first.found, len(first.rows)) == (0, 450, views.RULES_PER_PAGE)
    assert first.previous is None and first.next == 200
    assert first.rows[0]["id"] == "route:shop/r0:0"
    last = views.rule_page(gateway, 400)
    assert [r["id"] for r in last.rows] == [f"route:shop/r{i}:0" for i in range(400, 450)]
    assert last.previous == 200 and last.next is None
    beyond = views.rule_page(gateway, 10_000)  # a stale link: the last rule's page
    assert beyond.start == 449 and len(beyond.rows) == 1


def test_the_route_table_filter_looks_at_ids_owners_and_paths() -> None:
    gateway = _gateway_of(450)
    found = views.rule_page(gateway, 0, " /ITEMS/12")
    assert found.found == 11 and found.next is None  # 12 and 120-129
    assert {r["route"] for r in found.rows} == {"Route shop/r12", *(
        f"Route shop/r{i}" for i in range(120, 130))}
    assert views.rule_page(gateway, 0, "r449").found == 1
    nothing = views.rule_page(gateway, 0, "nowhere")
    assert (nothing.found, nothing.rows, nothing.next) == (0, [], None)
