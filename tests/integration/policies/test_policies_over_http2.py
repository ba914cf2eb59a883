"""The same policies over HTTP/2 (#13 item 5): apiKey, basicAuth, jwt, extAuth (this module
reuses test_auth's gateway, JWKS server and auth service), and CORS, headers, local rate
limits, ipFilter-free request limits (test_traffic's gateway): every request goes over h2c
with prior knowledge, to the same HTTP/1.1 echo upstream, and gets the answer the HTTP/1.1
tests expect."""

from __future__ import annotations

import base64
from typing import Any

from tests.integration.policies._helpers import echoed
from tests.integration.policies.test_auth import env, mint  # noqa: F401 (the fixture)
from tests.integration.policies.test_traffic import gw  # noqa: F401 (the fixture)
from tests.support.h2client import H2Client


def h2(port: int, method: str, path: str, headers: dict[str, str] | None = None,
       body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    with H2Client(port) as client:
        answer = client.wait(client.request(method, path, headers=list((headers or {}).items()),
                                            body=body))
    fields = {n.decode(): v.decode() for n, v in answer.headers if not n.startswith(b":")}
    return answer.status, fields, answer.body


def test_api_key_over_h2(env: dict[str, Any]) -> None:  # noqa: F811
    port = env["gw"].port
    assert h2(port, "GET", "/key/a")[0] == 401
    status, _, body = h2(port, "GET", "/key/a", {"x-api-key": "k-acme-0123456789",
                                                 "x-consumer-name": "spoofed"})
    assert status == 200
    seen = echoed(body)["headers"]
    assert "x-api-key" not in seen and seen["x-consumer-name"] == "acme"


def test_basic_auth_over_h2(env: dict[str, Any]) -> None:  # noqa: F811
    good = base64.b64encode(b"alice:s3cret").decode()
    bad = base64.b64encode(b"alice:nope").decode()
    port = env["gw"].port
    assert h2(port, "GET", "/basic", {"authorization": f"Basic {good}"})[0] == 200
    status, headers, _ = h2(port, "GET", "/basic", {"authorization": f"Basic {bad}"})
    assert status == 401 and "basic" in headers["www-authenticate"].lower()


def test_jwt_over_h2(env: dict[str, Any]) -> None:  # noqa: F811
    token = mint(env["rsa"], "RS256", "k1", roles=["admin"])
    port = env["gw"].port
    status, _, body = h2(port, "GET", "/jwt", {"authorization": f"Bearer {token}"})
    assert status == 200
    assert echoed(body)["headers"]["x-user"] == "u1"
    expired = mint(env["rsa"], "RS256", "k1", exp=1)
    assert h2(port, "GET", "/jwt", {"authorization": f"Bearer {expired}"})[0] == 401


def test_ext_auth_over_h2(env: dict[str, Any]) -> None:  # noqa: F811
    port = env["gw"].port
    status, _, body = h2(port, "GET", "/ext/h2?x=1", {"authorization": "Bearer good"})
    assert status == 200 and echoed(body)["headers"]["x-user"] == "alice"
    method, path, _ = env["auth"].calls[-1]
    assert (method, path) == ("GET", "/check/ext/h2?x=1")
    status, headers, body = h2(port, "GET", "/ext/h2b", {"authorization": "Bearer bad"})
    assert (status, body) == (403, b"denied by policy")
    assert headers["x-deny-reason"] == "bad-token"


def test_request_body_reaches_the_upstream_through_auth(env: dict[str, Any]) -> None:  # noqa: F811
    port = env["gw"].port
    status, _, body = h2(port, "POST", "/key/upload", {"x-api-key": "k-acme-0123456789"},
                         body=b"x" * 70_000)
    assert status == 200
    assert echoed(body)["target"] == "/key/upload"


# -- traffic policies: test_traffic's gateway (two workers), over h2c ----------------------


def test_ip_filter_and_gateway_headers_over_h2(gw) -> None:  # noqa: F811
    status, headers, _ = h2(gw.port, "GET", "/internal", {"x-forwarded-for": "192.168.1.5"})
    assert status == 200 and headers["x-edge"] == "1"
    assert h2(gw.port, "GET", "/internal", {"x-forwarded-for": "172.16.0.1"})[0] == 403


def test_cors_over_h2(gw) -> None:  # noqa: F811
    status, headers, _ = h2(gw.port, "OPTIONS", "/cors/x", {
        "origin": "https://app.example.com", "access-control-request-method": "PUT",
        "access-control-request-headers": "x-custom"})
    assert status == 204
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    _, headers, _ = h2(gw.port, "GET", "/cors/x", {"origin": "https://evil.test"})
    assert "access-control-allow-origin" not in headers


def test_request_limits_over_h2(gw) -> None:  # noqa: F811
    assert h2(gw.port, "POST", "/upload", body=b"x" * 50)[0] == 200
    assert h2(gw.port, "POST", "/upload", body=b"x" * 500)[0] == 413


def test_local_rate_limit_over_h2(gw) -> None:  # noqa: F811
    statuses = [h2(gw.port, "GET", "/tenant", {"x-tenant": "h2-tenant"})[0] for _ in range(6)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429, 429]
