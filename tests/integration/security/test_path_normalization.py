"""Path normalisation before routing (issue #11 item 2), as raw bytes against a real gateway
and an upstream that records every byte it receives.

``prefix: /admin`` is protected (here: answered by the gateway itself with 403); everything
else is forwarded. Before normalisation, each attack below reached the catch-all rule and was
forwarded unchanged to an upstream that reads it as ``/admin``.
"""

from __future__ import annotations

import pytest

from tests.integration.edge._helpers import listener_gateway
from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import Gateway
from tests.support.net import free_port
from tests.support.recording import RecordingUpstream

ATTACKS = [
    "/%61dmin", "/./admin", "/public/../admin", "/%2e/admin", "//admin", "/%2E%2E/admin",
    "/public/.%2e/admin/users", "/public/%2e%2e/%61dmin", "///admin/", "/admin/./",
]


@pytest.fixture(scope="module")
def recorder() -> RecordingUpstream:
    upstream = RecordingUpstream("rec").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"keep": free_port(), "raw": free_port(), "strip": free_port()}


@pytest.fixture(scope="module")
def gw(module_gateways, recorder: RecordingUpstream, ports: dict[str, int]) -> Gateway:
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
            r.rule({"prefix": "/admin"}, directResponse={"status": 403, "body": "protected"}),
            r.rule(forward=r.forward("rec")),
        ]),
        r.upstream("rec", recorder.port),
    ))


def send(port: int, request_line: bytes) -> tuple[int, bytes]:
    with RawClient(port) as client:
        client.send(request_line + b"\r\nHost: a\r\n\r\n")
        response = client.read_final()
        return response.status, response.body


@pytest.mark.parametrize("path", ATTACKS)
def test_admin_bypass_attempts_are_routed_to_admin(gw: Gateway, recorder: RecordingUpstream,
                                                   path: str) -> None:
    recorder.reset()
    assert send(gw.port, b"GET %s HTTP/1.1" % path.encode()) == (403, b"protected")
    absolute = b"GET http://a%s HTTP/1.1" % path.encode()
    assert send(gw.port, absolute) == (403, b"protected")
    assert recorder.received == b""


@pytest.mark.parametrize("path, reason", [
    ("/admin%2Fusers", b"encoded '/'"),
    ("/public%2f..%2fadmin", b"encoded '/'"),
    ("/public%5c..%5cadmin", b"encoded '/'"),
    ("/public\\..\\admin", b"backslash"),
    ("/admin#x", b"fragment"),
    ("/public?q#x", b"fragment"),
    ("/%zzadmin", b"percent-encoding"),
])
def test_ambiguous_paths_rejected(gw: Gateway, recorder: RecordingUpstream, path: str,
                                  reason: bytes) -> None:
    recorder.reset()
    status, body = send(gw.port, b"GET %s HTTP/1.1" % path.encode())
    assert status == 400
    assert reason in body
    assert recorder.received == b""


def test_the_normalized_path_is_forwarded(gw: Gateway, recorder: RecordingUpstream) -> None:
    recorder.reset()
    status, _ = send(gw.port, b"GET /public/./a//b/../%63?x=%2e%2E HTTP/1.1")
    assert status == 200
    assert recorder.last.target == "/public/a/c?x=%2e%2E"  # the query is left alone


def test_escaped_slashes_kept_when_configured(gw: Gateway, recorder: RecordingUpstream,
                                              ports: dict[str, int]) -> None:
    recorder.reset()
    assert send(ports["keep"], b"GET /files/a%2fb HTTP/1.1")[0] == 200
    assert recorder.last.target == "/files/a%2Fb"
    assert send(ports["keep"], b"GET /%61dmin HTTP/1.1") == (403, b"protected")


def test_raw_paths_when_normalization_is_off(gw: Gateway, recorder: RecordingUpstream,
                                             ports: dict[str, int]) -> None:
    recorder.reset()
    assert send(ports["raw"], b"GET /x/../%61//b HTTP/1.1")[0] == 200
    assert recorder.last.target == "/x/../%61//b"
    assert send(ports["raw"], b"GET /a#frag HTTP/1.1")[0] == 400


def test_path_parameters_stripped_when_configured(gw: Gateway, recorder: RecordingUpstream,
                                                  ports: dict[str, int]) -> None:
    recorder.reset()
    assert send(ports["strip"], b"GET /admin;jsessionid=1/x HTTP/1.1") == (403, b"protected")
    assert send(ports["strip"], b"GET /shop;v=2/cart HTTP/1.1")[0] == 200
    assert recorder.last.target == "/shop/cart"
    # by default, parameters are part of the segment: /admin;x is not under /admin
    assert send(gw.port, b"GET /shop;v=2/cart HTTP/1.1")[0] == 200
    assert recorder.last.target == "/shop;v=2/cart"
