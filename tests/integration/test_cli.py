"""``propylon validate`` and ``propylon explain`` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import resources as r

GOOD = r.dump(
    r.gateway(8080, policies=[r.headers_policy(response={"set": {"x-served-by": "gw"}})]),
    r.route("shop", hostnames=["shop.test"], rules=[
        r.rule({"prefix": "/api"}, name="canary", headers=[{"name": "x-canary", "value": "1"}],
               forward=r.forward("v2"),
               policies=[r.headers_policy(request={"set": {"x-env": "canary"}})]),
        r.rule({"prefix": "/api"}, name="stable", forward=r.forward("v1")),
    ]),
    r.upstream("v1", 9001),
    r.upstream("v2", 9002),
)


def propylon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propylon", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.fixture
def good_dir(tmp_path: Path) -> Path:
    (tmp_path / "gateway.yaml").write_text(GOOD)
    return tmp_path


def test_validate_accepts_a_good_file(good_dir) -> None:
    result = propylon("validate", str(good_dir / "gateway.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


def test_validate_reports_every_error_with_file_and_line(tmp_path) -> None:
    text = GOOD.replace("  rules:", "  bogusField: 1\n  rules:", 1).replace(
        "port: 9002", "port: 99999")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = propylon("validate", str(bad))
    assert result.returncode == 1
    assert f"{bad}:{line_of(text, 'bogusField')}:" in result.stderr, result.stderr
    assert f"{bad}:{line_of(text, 'port: 99999')}:" in result.stderr, result.stderr


def test_validate_reports_what_run_would_refuse_to_install(tmp_path) -> None:
    """Valid resources that cannot run: a CA file that is not there. `run` refuses them when
    it compiles the configuration; `validate` compiles it too and says why."""
    text = GOOD + "---\n" + r.dump(r.route("authz", rules=[r.rule(
        {"prefix": "/authz"}, forward=r.forward("v1"),
        policies=[{"extAuth": {"url": "https://localhost:9443/check",
                               "caFile": "missing-ca.pem"}}])]))
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    result = propylon("validate", str(config))
    assert result.returncode == 1, result.stdout
    assert "extAuth.caFile" in result.stderr and "missing-ca.pem" in result.stderr, (
        result.stderr)
    assert not result.stdout.startswith("ok:")


def test_validate_names_the_upstream_tls_file_it_cannot_load(tmp_path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(GOOD + "---\n" + r.dump({
            "apiVersion": "propylon.dev/v1", "kind": "Upstream",
            "metadata": {"name": "partner", "namespace": "default"},
            "spec": {"endpoints": [{"address": "127.0.0.1", "port": 9443}],
                     "tls": {"sni": "partner.test", "caFile": "partner-ca.pem"}}},
        r.route("partner", rules=[r.rule({"prefix": "/partner"}, forward=r.forward("partner"))])))
    result = propylon("validate", str(config))
    assert result.returncode == 1, result.stdout
    assert "Upstream default/partner: tls.caFile: cannot load" in result.stderr, result.stderr
    assert str(tmp_path / "partner-ca.pem") in result.stderr, result.stderr


def test_validate_reports_a_yaml_syntax_error_with_its_line(tmp_path) -> None:
    bad = tmp_path / "syntax.yaml"
    bad.write_text("apiVersion: propylon.dev/v1\nkind: Gateway\nspec: [unclosed\n")
    result = propylon("validate", str(bad))
    assert result.returncode == 1
    assert f"{bad}:" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("headers", "rule", "policy", "upstream"),
    [
        pytest.param(["-H", "x-canary:1"], "rule canary", "Route default/shop rule canary",
                     "default/v2", id="canary-rule"),
        pytest.param([], "rule stable", "Gateway default/gw", "default/v1", id="stable-rule"),
    ],
)
def test_explain_names_rule_policies_and_upstream(good_dir, headers, rule, policy,
                                                   upstream) -> None:
    result = propylon("explain", "GET", "http://shop.test:8080/api/items", *headers,
                      "-c", str(good_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(rule in line for line in lines), result.stdout
    policy_lines = [line for line in lines if line.strip().startswith("1.")]
    assert policy_lines and "headers" in policy_lines[0] and policy in policy_lines[0]
    assert any(f"upstream {upstream}" in line for line in lines), result.stdout


def test_explain_exits_2_when_nothing_matches(good_dir) -> None:
    result = propylon("explain", "GET", "http://other.test:8080/api", "-c", str(good_dir))
    assert result.returncode == 2
    assert "no rule matches" in result.stdout
