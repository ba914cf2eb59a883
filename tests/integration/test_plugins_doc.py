"""docs/plugins.md's plugin, as a reader copies it: its one ``python`` block is the module and
its ``pyproject.toml`` block the packaging. Both are taken out of the page unchanged and made
a distribution with that entry point on ``PYTHONPATH`` (what ``pip install`` would leave),
then used through ``propylon plugins``, ``propylon validate`` and a real gateway."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import REPO
from tests.support.plugin_dist import env_with, write_dist
from tests.support.upstream import Reply

PAGE = REPO / "docs" / "plugins.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(PAGE.read_text()) if lang == language]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's package, installed as a distribution in a folder of its own."""
    (module,) = blocks("python")  # the page shows one complete module
    (pyproject,) = blocks("toml")
    project = tomllib.loads(pyproject)["project"]
    entry_points = project["entry-points"]["propylon.filters"]
    (py_module,) = tomllib.loads(pyproject)["tool"]["setuptools"]["py-modules"]
    return write_dist(tmp_path_factory.mktemp("site"), project["name"], entry_points,
                      {py_module: module}, project["version"])


def propylon(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "propylon", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=env_with(site))


def test_the_page_s_plugin_is_listed(site: Path) -> None:
    result = propylon(site, "plugins", "-o", "json")
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert listed["maskFields"] == {
        "name": "maskFields", "package": "propylon-mask-fields", "version": "1.0.0",
        "class": "propylon_mask_fields:MaskFieldsFilter",
        "placement": {"where": "before", "phase": "headers"},
        "phases": ["on_response", "on_response_body"],
        "body": {"needsConfig": True}, "error": None,
    }
    text = propylon(site, "plugins").stdout
    row = next(line for line in text.splitlines() if line.startswith("maskFields "))
    assert row.split() == ["maskFields", "propylon-mask-fields", "1.0.0",
                           "propylon_mask_fields:MaskFieldsFilter", "before", "headers",
                           "response,response_body", "needs", "config"]


def config(port: int, upstream_port: int, plugin_config: dict[str, Any]) -> str:
    """A Route ``shop/users`` (what the page's Policy targets) with a ``maskFields`` rule."""
    return r.dump(
        r.gateway(port, routeSelector={"namespaces": ["shop"]}),
        r.route("users", namespace="shop", rules=[r.rule(forward=r.forward("up"), policies=[
            {"plugins": [{"name": "maskFields", "config": plugin_config}]}])]),
        r.upstream("up", upstream_port, namespace="shop"),
    )


def test_the_page_s_yaml_validates_and_bad_configs_are_located(site: Path,
                                                               tmp_path: Path) -> None:
    policy = next(block for block in blocks("yaml") if "kind: Policy" in block)
    good = config(8080, 9001, {"fields": ["password"]}) + "---\n" + policy
    (tmp_path / "good.yaml").write_text(good)
    result = propylon(site, "validate", str(tmp_path / "good.yaml"))
    assert result.returncode == 0, result.stderr
    bad = config(8080, 9001, {"fields": [], "maxBodySize": 0})
    (tmp_path / "bad.yaml").write_text(bad)
    result = propylon(site, "validate", str(tmp_path / "bad.yaml"))
    assert result.returncode == 1
    where = "Route shop/users: spec.rules[0].policies[0].plugins[0].config"
    lines = bad.splitlines()
    fields_line = next(i for i, line in enumerate(lines, 1) if "fields: []" in line)
    size_line = next(i for i, line in enumerate(lines, 1) if "maxBodySize: 0" in line)
    assert f"bad.yaml:{fields_line}:" in result.stderr and f"{where}.fields: " in result.stderr
    assert f"bad.yaml:{size_line}:" in result.stderr and f"{where}.maxBodySize: " in (
        result.stderr)


def test_the_page_s_plugin_masks_a_response_through_a_gateway(
        site: Path, gateways, upstreams, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", env_with(site)["PYTHONPATH"])  # the gateway's processes
    up = upstreams("users")
    gw = gateways(lambda port: config(port, up.port, {"fields": ["password", "token"]}))
    doc = {"user": "ada", "password": "x", "sessions": [{"token": "t", "ip": "10.0.0.1"}]}
    up.reply(Reply(headers=[("content-type", "application/json")],
                   body=json.dumps(doc).encode(), framing="chunked"))
    response = roundtrip(gw.port, "GET", "/me")
    assert response.status == 200, response
    assert json.loads(response.body) == {
        "user": "ada", "password": "***", "sessions": [{"token": "***", "ip": "10.0.0.1"}]}
    assert response.header("content-length") == str(len(response.body))
    assert response.header("x-masked-fields") == "2"
