"""How ``propylon validate`` prints and locates problems (no processes)."""

from __future__ import annotations

import pytest

from propylon import ir
from propylon.cli.problems import Problem, locate, unlocated_invalid
from propylon.config import ConfigError, Source

SOURCES = {"Route shop/a": Source("routes.yaml", 12), "Gateway infra/gw": Source("gw.yaml", 1)}


@pytest.mark.parametrize(
    ("problem", "text"),
    [
        pytest.param(Problem("m", "f.yaml", 3, 7), "f.yaml:3:7: m", id="column"),
        pytest.param(Problem("m", "f.yaml", 3), "f.yaml:3: m", id="line"),
        pytest.param(Problem("m", "f.yaml"), "f.yaml: m", id="file"),
        pytest.param(Problem("m"), "m", id="nowhere"),
    ],
)
def test_problem_text(problem, text) -> None:
    assert str(problem) == text


def test_a_config_error_keeps_its_location_and_loses_nothing_else() -> None:
    error = ConfigError("f.yaml", 4, "Route", "shop/a", "spec.rules[0]", "bad")
    problem = Problem.from_config_error(error)
    assert str(problem) == str(error) == "f.yaml:4: Route shop/a: spec.rules[0]: bad"
    assert problem.to_json() == {"file": "f.yaml", "line": 4, "column": None,
                                 "message": "Route shop/a: spec.rules[0]: bad",
                                 "severity": "error"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("x.yaml:5:2: broken", Problem("broken", "x.yaml", 5, 2), id="own-location"),
        pytest.param("Route shop/a rule #0: extAuth.caFile: cannot load",
                     Problem("Route shop/a rule #0: extAuth.caFile: cannot load",
                             "routes.yaml", 12), id="named-resource"),
        pytest.param("listener 127.0.0.1:80 of Gateway infra/gw2 is used by Gateway infra/gw",
                     Problem("listener 127.0.0.1:80 of Gateway infra/gw2 is used by "
                             "Gateway infra/gw", "gw.yaml", 1), id="first-known-resource"),
        pytest.param("no Gateway resource found: nothing to serve",
                     Problem("no Gateway resource found: nothing to serve"), id="nowhere"),
    ],
)
def test_locate(text, expected) -> None:
    assert locate(text, SOURCES) == expected


def test_a_translation_warning_keeps_its_severity_and_a_file_less_error_has_no_file() -> None:
    warning = ConfigError("f.yaml", 9, "Route", "shop/a", "spec.rules[1]", "never matches",
                          "warning")
    assert Problem.from_config_error(warning).severity == "warning"
    unsourced = ConfigError("", None, "Route", "shop/a", None, "bad")  # given as API data
    assert str(Problem.from_config_error(unsourced)) == "Route shop/a: bad"


def test_an_invalid_resource_without_a_located_error_still_fails_validate() -> None:
    statuses = [ir.StatusIR("Route", "shop/a", "Invalid", ("spec.x: bad",)),
                ir.StatusIR("Route", "shop/b", "Invalid", ("spec.y: bad",)),
                ir.StatusIR("Upstream", "shop/u", "Accepted")]
    issues = [ConfigError("routes.yaml", 14, "Route", "shop/b", "spec.y", "bad")]
    assert unlocated_invalid(statuses, issues, SOURCES) == [
        Problem("Route shop/a: Invalid: spec.x: bad", "routes.yaml", 12)]


CONTAINED = """apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge}
spec:
  listeners: [{name: http, port: 8080}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: bad}
spec:
  rules:
    - matches: [{path: {prefix: /a}}]
      colour: red
      directResponse: {status: 200}
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: missing}
spec:
  rules:
    - matches: [{path: {prefix: /b}}]
      forward: {backends: [{upstream: nowhere}]}
"""


def test_validate_reports_a_schema_error_and_what_the_rest_would_do(tmp_path) -> None:
    """``run`` contains a resource that fails validation and serves the rest; ``validate``
    says both: the resource's error, and the problems of the rest (they were not checked
    once a file had a schema error)."""
    from propylon.cli.problems import check_paths

    (tmp_path / "a.yaml").write_text(CONTAINED)
    check = check_paths([tmp_path])
    assert check.failed
    assert [str(p) for p in check.problems] == [
        f"{tmp_path / 'a.yaml'}:13:7: Route default/bad: spec.rules[0].colour: unknown field",
        f"{tmp_path / 'a.yaml'}:22:29: Route default/missing: spec.rules[0].forward.backends[0]"
        '.upstream: upstream "default/nowhere" not found',
    ]


def test_validate_stops_at_an_error_that_names_no_resource(tmp_path) -> None:
    """A YAML syntax error: ``run`` would serve none of the set, so nothing is translated."""
    from propylon.cli.problems import check_paths

    (tmp_path / "a.yaml").write_text(CONTAINED)
    (tmp_path / "b.yaml").write_text("kind: [unclosed\n")
    check = check_paths([tmp_path])
    messages = [p.message for p in check.problems]
    assert any("unknown field" in m for m in messages)
    assert not any("nowhere" in m for m in messages), messages
    assert any(p.file == str(tmp_path / "b.yaml") for p in check.problems)
