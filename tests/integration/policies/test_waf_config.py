"""``waf`` sections checked by ``propylon validate`` and ``propylon run``: a missing library or
rule set names the Debian packages to install, a rule ModSecurity refuses is named by its
index, bad shapes are located; the gateway keeps serving the other Gateways and routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import propylon
from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway


def config(port: int, route_waf: dict[str, Any]) -> str:
    return r.dump(
        r.gateway(port),
        r.route("guarded", hostnames=["guarded.test"], rules=[
            r.rule({"prefix": "/"}, directResponse={"status": 200, "body": "guarded"},
                   policies=[{"waf": route_waf}])]),
        r.route("open", hostnames=["open.test"], rules=[
            r.rule({"prefix": "/"}, directResponse={"status": 200, "body": "open"})]),
    )


def validate(tmp_path: Path, route_waf: dict[str, Any], env: dict[str, str] | None = None
             ) -> tuple[int, str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(8080, route_waf))
    done = propylon("validate", str(path), env=env)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(("env", "expected"), [
    pytest.param({"PROPYLON_LIBMODSECURITY": "/nonexistent/libmodsecurity.so.3"},
                 "cannot open shared object file", id="no-library"),
    pytest.param({"PROPYLON_CRS_RULES": "/nonexistent/crs/rules"},
                 "the OWASP CRS rules in /nonexistent/crs/rules", id="no-crs"),
])
def test_missing_packages_are_named(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    code, out = validate(tmp_path, {"mode": "block"}, env)
    assert code == 1
    assert "install the Debian packages libmodsecurity3 modsecurity-crs" in out
    assert expected in out and "Route default/guarded" in out


@pytest.mark.parametrize(("waf", "expected"), [
    pytest.param({"rules": ['SecRule ARGS "@rx x" "phase:2,deny"']},
                 "waf.rules[0]: Rules must have an ID", id="rule-without-id"),
    pytest.param({"mode": "audit"}, "spec.rules[0].policies[0].waf.mode", id="mode"),
    pytest.param({"paranoiaLevel": 5}, "waf.paranoiaLevel", id="paranoia"),
    pytest.param({"requestBodyLimit": "1TiB"}, "invalid size", id="size"),
    pytest.param({"ruleExclusions": ["x"]}, "waf.ruleExclusions[0]", id="exclusion"),
])
def test_bad_sections_are_located(tmp_path: Path, waf: dict[str, Any], expected: str) -> None:
    code, out = validate(tmp_path, waf)
    assert code == 1
    assert expected in out and "gateway.yaml:" in out


def test_good_section_validates(tmp_path: Path) -> None:
    code, out = validate(tmp_path, {"mode": "detect", "paranoiaLevel": 2,
                                    "ruleExclusions": [920350],
                                    "rules": ['SecAction "id:1000002,phase:1,pass,nolog"']})
    assert code == 0, out


def test_run_without_the_library_serves_the_other_routes(
        gateways: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROPYLON_LIBMODSECURITY", "/nonexistent/libmodsecurity.so.3")
    gw: Gateway = gateways(lambda port: config(port, {"mode": "block"}))
    guarded = roundtrip(gw.port, "GET", "/", host="guarded.test")
    assert guarded.status == 500  # fails closed: the invalid-route response, never unguarded
    assert roundtrip(gw.port, "GET", "/", host="open.test").body == b"open"
    assert "install the Debian packages libmodsecurity3 modsecurity-crs" in gw.stderr_text()
