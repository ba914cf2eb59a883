"""Plugins as a user installs and configures them: the example package (``examples/plugins``,
``jsonRewrite``) and the test-only one (``tests/plugins``), both installed into the test
environment by ``scripts/_venv.sh``, used from YAML through a real gateway process and a
scripted upstream; ``propylon validate`` / ``run`` refusing bad plugin sections with
file:line; ``propylon plugins`` listing them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import REPO, Gateway
from tests.support.plugin_dist import env_with, write_dist
from tests.support.upstream import Reply, ScriptedUpstream

HOST = "plugins.test"
DOC = {"id": 7, "secret": "s3", "meta": {"v": 1}, "name": "caf\u00e9"}


def json_rewrite(**config: Any) -> dict[str, Any]:
    return {"plugins": [{"name": "jsonRewrite", "config": config}]}


def plugin(name: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "config": config}


@pytest.fixture(scope="module")
def shared_upstream(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("plugins")


def config(port: int, upstream_port: int) -> str:
    return r.dump(
        r.gateway(port, policies=[json_rewrite(responseHeaders={"x-level": "gateway"})]),
        r.route("main", hostnames=[HOST], rules=[
            r.rule({"prefix": "/json"}, forward=r.forward("up"), policies=[json_rewrite(
                remove=["secret", "meta.v"], set={"meta.via": "propylon", "tags": ["a"]},
                responseHeaders={"x-level": "rule", "x-rewritten": "yes"}, maxBodySize=4096)]),
            r.rule({"prefix": "/gateway-level"}, forward=r.forward("up")),
            r.rule({"prefix": "/by-policy"}, name="by-policy", forward=r.forward("up")),
            r.rule({"prefix": "/order"}, forward=r.forward("up"), policies=[{
                "headers": {"request": {"add": {"x-plugin-order": "headers"}}},
                "plugins": [plugin("testStampAfterHeaders"), plugin("testStampBeforeAuth")],
            }]),
            r.rule({"prefix": "/before-auth"}, forward=r.forward("up"), policies=[{
                "apiKey": {}, "plugins": [plugin("testStampBeforeAuth", answer=418)]}]),
            r.rule({"prefix": "/after-auth"}, forward=r.forward("up"), policies=[{
                "apiKey": {}, "plugins": [plugin("testStampAfterHeaders", answer=418)]}]),
        ]),
        r.policy("by-policy", [{"kind": "Route", "name": "main", "sectionName": "by-policy"}],
                 plugins=[plugin("jsonRewrite", remove=["secret"],
                                 responseHeaders={"x-level": "policy"})]),
        r.upstream("up", upstream_port),
    )


@pytest.fixture(scope="module")
def gw(module_gateways, shared_upstream: ScriptedUpstream) -> Gateway:
    return module_gateways(lambda port: config(port, shared_upstream.port))


@pytest.fixture
def up(shared_upstream: ScriptedUpstream, gw: Gateway) -> ScriptedUpstream:
    shared_upstream.reset()
    return shared_upstream


def json_reply(doc: Any = DOC, framing: str = "length", **headers: str) -> Reply:
    return Reply(headers=[("content-type", "application/json; charset=utf-8"),
                          *headers.items()],
                 body=json.dumps(doc).encode(), framing=framing)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_json_body_and_headers_are_rewritten(gw: Gateway, up: ScriptedUpstream,
                                             framing: str) -> None:
    """Whole response body: collected, edited once, sent with its new Content-Length
    whatever the upstream's framing was."""
    up.reply(json_reply(framing=framing))
    response = roundtrip(gw.port, "GET", "/json/1", host=HOST)
    assert response.status == 200, response
    assert json.loads(response.body) == {"id": 7, "meta": {"via": "propylon"},
                                         "name": "caf\u00e9", "tags": ["a"]}
    assert response.framing == "length"
    assert response.header("content-length") == str(len(response.body))
    assert response.header("transfer-encoding") is None
    assert response.header("x-level") == "rule"  # the rule's section replaces the Gateway's
    assert response.header("x-rewritten") == "yes"


def test_other_bodies_go_through_untouched(gw: Gateway, up: ScriptedUpstream) -> None:
    body = b'{"secret": "stays: this is text/plain"}'
    up.reply(Reply(headers=[("content-type", "text/plain")], body=body))
    response = roundtrip(gw.port, "GET", "/json/text", host=HOST)
    assert (response.status, response.body) == (200, body)
    assert response.header("content-length") == str(len(body))
    up.reply(json_reply(doc=[1, 2]))  # not an object
    assert roundtrip(gw.port, "GET", "/json/list", host=HOST).body == b"[1, 2]"


def test_a_body_over_the_plugin_s_cap_is_answered_502(gw: Gateway, up: ScriptedUpstream
                                                     ) -> None:
    up.reply(json_reply(doc={"big": "x" * 5000}))  # maxBodySize 4096
    assert roundtrip(gw.port, "GET", "/json/big", host=HOST).status == 502
    up.reply(json_reply(doc={"big": "x" * 5000}, framing="chunked"))  # found while reading
    assert roundtrip(gw.port, "GET", "/json/big", host=HOST).status == 502


def test_head_answers_are_untouched(gw: Gateway, up: ScriptedUpstream) -> None:
    up.reply(Reply(headers=[("content-type", "application/json")], body=b'{"a": 1}'))
    response = roundtrip(gw.port, "HEAD", "/json/head", host=HOST)
    assert (response.status, response.body) == (200, b"")
    assert response.header("content-length") == "8"  # the upstream's, not a rewritten one
    assert response.header("x-rewritten") == "yes"  # header edits still apply


@pytest.mark.parametrize(("path", "level", "body"), [
    pytest.param("/gateway-level", "gateway", DOC, id="gateway"),
    pytest.param("/by-policy", "policy", {k: v for k, v in DOC.items() if k != "secret"},
                 id="policy-resource-on-a-rule"),
])
def test_sections_attach_at_every_level(gw: Gateway, up: ScriptedUpstream, path: str,
                                        level: str, body: Any) -> None:
    up.reply(json_reply())
    response = roundtrip(gw.port, "GET", path, host=HOST)
    assert response.header("x-level") == level
    assert json.loads(response.body) == body


def test_plugins_run_where_their_class_places_them(gw: Gateway, up: ScriptedUpstream) -> None:
    """Listed after-first in YAML; run before auth, then headers, then after headers."""
    roundtrip(gw.port, "GET", "/order", host=HOST)
    assert up.last.head.get_all("x-plugin-order") == [
        "testStampBeforeAuth", "headers", "testStampAfterHeaders"]


@pytest.mark.parametrize(("path", "status"), [
    pytest.param("/before-auth", 418, id="before-auth-answers-first"),
    pytest.param("/after-auth", 401, id="auth-answers-first"),
])
def test_placement_relative_to_auth(gw: Gateway, up: ScriptedUpstream, path: str,
                                    status: int) -> None:
    assert roundtrip(gw.port, "GET", path, host=HOST).status == status
    assert up.requests == []


# -- validate, run, plugins --------------------------------------------------------------------
def propylon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "propylon", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=env or dict(os.environ))


def position(text: str, needle: str) -> tuple[int, int]:
    return next((i, line.index(needle) + 1) for i, line in enumerate(text.splitlines(), 1)
                if needle in line)


def located(line: str, path: Path, where: tuple[int, int], message: str) -> bool:
    """``line`` is ``file:line[:column]: message`` at ``where`` (the column when printed)."""
    pattern = rf"{re.escape(str(path))}:{where[0]}(:{where[1]})?: {re.escape(message)}"
    return re.fullmatch(pattern, line) is not None


def write_config(tmp_path: Path, sections: dict[str, Any]) -> tuple[Path, str]:
    text = r.dump(
        r.gateway(8080),
        r.route("main", rules=[r.rule(forward=r.forward("up"), policies=[sections])]),
        r.upstream("up", 9001),
    )
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path, text


PREFIX = "Route default/main: spec.rules[0].policies[0].plugins"


@pytest.mark.parametrize(("plugins", "needle", "message"), [
    pytest.param([plugin("jsonRewrite", maxBodySize="lots")], "maxBodySize",
                 f"{PREFIX}[0].config.maxBodySize: input should be a valid integer, unable to "
                 "parse string as an integer", id="bad-field"),
    pytest.param([plugin("jsonRewrite", responseHeaders={"x-a": 1}, colour="red")], "colour",
                 f"{PREFIX}[0].config.colour: unknown field", id="unknown-field"),
    pytest.param([plugin("jsonRewrite", maxBodySize=0)], "maxBodySize",
                 f"{PREFIX}[0].config.maxBodySize: input should be greater than or equal to 1",
                 id="out-of-range"),
    pytest.param([{"name": "jsonRewrite", "config": [1]}], "config",
                 f"{PREFIX}[0].config: a plugin's config is a mapping", id="not-a-mapping"),
    pytest.param([plugin("testBodyTally"), plugin("jsonRewrit")], "name: jsonRewrit",
                 f'{PREFIX}[1].name: no plugin named "jsonRewrit" is installed (installed: '
                 "jsonRewrite, testBodyTally, testRequestBody, testResponseBody, "
                 "testStampAfterHeaders, testStampBeforeAuth)", id="unknown-name"),
    pytest.param([plugin("jsonRewrite"), plugin("jsonRewrite", remove=["a"])], "plugins:",
                 f'{PREFIX}: plugin "jsonRewrite" is listed more than once', id="twice"),
])
def test_validate_locates_bad_plugin_sections(tmp_path: Path, plugins: list[Any], needle: str,
                                              message: str) -> None:
    path, text = write_config(tmp_path, {"plugins": plugins})
    result = propylon("validate", str(path))
    assert result.returncode == 1, result.stdout
    assert located(result.stderr.splitlines()[0], path, position(text, needle), message), (
        result.stderr)


def test_validate_accepts_good_plugin_sections(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path, {"plugins": [
        plugin("jsonRewrite", set={"a.b": 1}), plugin("testBodyTally")]})
    result = propylon("validate", str(path))
    assert result.returncode == 0, result.stderr


def test_the_example_s_config_validates() -> None:
    result = propylon("validate", str(REPO / "examples" / "plugins" / "config"))
    assert result.returncode == 0, result.stderr


def test_run_contains_a_bad_plugin_config_and_logs_its_location(gateways) -> None:
    """A schema error is contained (issue #15 item 4): the Route's matches answer the
    invalid-route response and the error is logged with its location."""
    def config(port: int) -> str:
        return r.dump(r.gateway(port), r.route("main", rules=[r.rule(
            forward=r.forward("up"),
            policies=[{"plugins": [plugin("jsonRewrite", maxBodySize=-1)]}])]),
            r.upstream("up", 9001))

    gw = gateways(config)
    assert roundtrip(gw.port, "GET", "/").status == 500
    line, column = position(gw.render(config), "maxBodySize")
    message = f"{PREFIX}[0].config.maxBodySize: input should be greater than or equal to 1"
    assert f"{gw.config_file}:{line}:{column}: {message}" in gw.stderr_text()


def test_plugins_lists_the_installed_ones() -> None:
    result = propylon("plugins", "-o", "json")
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert listed["jsonRewrite"] == {
        "name": "jsonRewrite",
        "package": "propylon-example-plugins",
        "version": "0.1.0",
        "class": "propylon_example_plugins.json_rewrite:JsonRewriteFilter",
        "placement": {"where": "after", "phase": "headers"},
        "phases": ["on_response", "on_response_body"],
        "body": {"response": {"wholeBody": 1048576}, "inspectOnly": False},
        "error": None,
    }
    assert listed["testStampBeforeAuth"]["placement"] == {"where": "before", "phase": "auth"}
    assert listed["testBodyTally"]["body"] == {
        "request": {"wholeBody": 0}, "response": {"wholeBody": 0}, "inspectOnly": True}
    text = propylon("plugins")
    assert text.returncode == 0, text.stderr
    header, *rows = text.stdout.splitlines()
    assert header.split()[:5] == ["NAME", "PACKAGE", "CLASS", "PLACE", "PHASES"]
    row = next(line for line in rows if line.startswith("jsonRewrite "))
    assert "propylon-example-plugins 0.1.0" in row and "after headers" in row
    assert "response: whole body, at most 1048576 bytes" in row


def test_a_broken_plugin_is_listed_with_its_reason_and_refused_where_used(tmp_path: Path
                                                                           ) -> None:
    site = write_dist(tmp_path / "site", "propylon-broken", {"brokenOne": "broken_one:Nope"},
                      {"broken_one": "Nope = 1\n"})
    env = env_with(site)
    listing = propylon("plugins", env=env)
    assert listing.returncode == 1
    assert "jsonRewrite " in listing.stdout  # the usable ones are still listed
    assert listing.stderr.strip() == ("brokenOne (propylon-broken 1.0, broken_one:Nope): "
                                      "cannot be used: broken_one:Nope is not a subclass of "
                                      "propylon.filters.Filter")
    path, _ = write_config(tmp_path, {"plugins": [plugin("brokenOne")]})
    result = propylon("validate", str(path), env=env)
    assert result.returncode == 1
    assert (f'{PREFIX}[0].name: plugin "brokenOne" cannot be used: broken_one:Nope is not a '
            "subclass of propylon.filters.Filter") in result.stderr
