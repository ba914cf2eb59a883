"""``propylon explain`` routes the path the gateway routes (issue #11): the listener's path
normalisation first, a path the listener refuses reported as its 400. Each verdict is checked
against a real gateway answering the same request target on the same listener (explain's
library function over the gateway's own files; the command itself for the wording and the
exit code).

``prefix: /admin`` answers 403 and everything else 200, both from the gateway itself, so the
status names the rule the gateway chose.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from propylon import ir
from propylon.explain import explain as explain_request
from propylon.standalone import build_snapshot
from tests.integration.edge._helpers import listener_gateway
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway
from tests.support.net import free_port

# raw paths: plain, the admin bypass attempts, and what the default listener refuses
PATHS = [
    "/admin/users", "/public", "/%61dmin", "/./admin", "/public/../admin", "/%2e/admin",
    "//admin", "/public/.%2e/admin/users", "/admin%2Fusers", "/public%5c..%5cadmin",
    "/admin;x=1", "/%zz", "/caf\u00e9/../admin",
]
RULE_OF_STATUS = {403: "rule admin", 200: "rule public"}


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"keep": free_port(), "raw": free_port(), "strip": free_port()}


@pytest.fixture(scope="module")
def gw(module_gateways, ports: dict[str, int]) -> Gateway:
    def listener(name: str, **paths: object) -> dict:
        return {"name": name, "port": ports[name], "address": "127.0.0.1",
                "pathNormalization": paths}

    return module_gateways(lambda port: r.dump(
        listener_gateway(port, extra_listeners=[
            listener("keep", escapedSlashes="keep"),
            listener("raw", enabled=False),
            listener("strip", pathParameters="strip"),
        ]),
        r.route("main", rules=[
            r.rule({"prefix": "/admin"}, name="admin",
                   directResponse={"status": 403, "body": "protected"}),
            r.rule({"prefix": "/"}, name="public", directResponse={"status": 200, "body": "ok"}),
        ]),
    ))


def gateway_status(port: int, path: str) -> int:
    with RawClient(port) as client:
        client.send(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode())
        return client.read_final().status


@pytest.fixture(scope="module")
def snapshot(gw: Gateway) -> ir.SnapshotIR:
    result = build_snapshot([gw.config_file])
    assert result.snapshot is not None, result.errors
    return result.snapshot


def explain(gw: Gateway, port: int, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propylon", "explain", "GET", f"http://a:{port}{path}",
         "-c", str(gw.config_file)],
        capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("listener", ["web", "keep", "raw", "strip"])
@pytest.mark.parametrize("path", PATHS)
def test_explain_gives_the_gateways_verdict(gw: Gateway, snapshot: ir.SnapshotIR,
                                           ports: dict[str, int], listener: str,
                                           path: str) -> None:
    port = gw.port if listener == "web" else ports[listener]
    status = gateway_status(port, path)
    explanation = explain_request(snapshot, "GET", f"http://a:{port}{path}", {})
    text = "\n".join(explanation.lines)
    routed = [line for line in explanation.lines if line.startswith("  rule ")]
    if status == 400:
        assert not explanation.matched and not routed, text
        assert any(line.startswith("  rejected 400: ") for line in explanation.lines), text
        return
    assert explanation.matched, text
    assert len(routed) == 1 and routed[0].endswith(f"{RULE_OF_STATUS[status]})"), text


@pytest.mark.parametrize(("path", "normalised"), [
    ("/public/../admin", "/admin"), ("/%61dmin/x", "/admin/x"), ("//admin", "/admin"),
])
def test_explain_says_when_the_path_was_normalised(gw: Gateway, path: str,
                                                   normalised: str) -> None:
    result = explain(gw, gw.port, path)
    assert f"  path     normalised to {normalised} " in result.stdout, result.stdout
    assert "rule admin" in result.stdout
    unchanged = explain(gw, gw.port, "/admin/x")
    assert "normalised" not in unchanged.stdout, unchanged.stdout


def test_explain_names_why_the_listener_refuses_a_path(gw: Gateway) -> None:
    result = explain(gw, gw.port, "/admin%2Fusers")
    assert result.returncode == 3
    assert "  rejected 400: an encoded '/' or '\\' in the path (nothing is routed)" in (
        result.stdout), result.stdout
