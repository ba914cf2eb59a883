"""extAuth and jwt JWKS over https: real TLS servers (trustme CA) on 127.0.0.1, the real gateway.

The auth service and the JWKS server are the ones of ``test_auth`` served over TLS with a
certificate for ``localhost`` (resolved to 127.0.0.1 only) and 127.0.0.1. The gateway trusts
the test CA through ``caFile``; routes configured with another CA, or with the system's CAs,
must treat the service as unreachable (failOpen honoured) and never fetch keys.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.policies._helpers import (
    EDGE_AND_ECHO,
    GatewayProc,
    Upstream,
    echoed,
    free_port,
    poll_until,
    request,
)
from tests.integration.policies.test_auth import AuthService, JwksServer, mint, rsa_jwk
from tests.support.tls import Pki

RULES = """
    - matches: [{path: {prefix: /ext-tls}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - extAuth:
            url: "https://localhost:AUTH/check"
            caFile: certs/ca.pem
            headersToAuth: [authorization]
            upstreamHeaders: [x-user]
            clientHeaders: [x-deny-reason]
    - matches: [{path: {prefix: /ext-wrong-ca-open}}]
      forward: {backends: [{upstream: echo}]}
      policies: [{extAuth: {url: "https://localhost:AUTH/check", caFile: certs/other.pem,
                            failOpen: true}}]
    - matches: [{path: {prefix: /ext-wrong-ca}}]
      forward: {backends: [{upstream: echo}]}
      policies: [{extAuth: {url: "https://localhost:AUTH/check", caFile: certs/other.pem}}]
    - matches: [{path: {prefix: /ext-system-ca}}]
      forward: {backends: [{upstream: echo}]}
      policies: [{extAuth: {url: "https://localhost:AUTH/check", statusOnError: 503}}]
    - matches: [{path: {prefix: /ext-plain-server}}]
      forward: {backends: [{upstream: echo}]}
      policies: [{extAuth: {url: "https://localhost:PLAIN/check", caFile: certs/ca.pem}}]
    - matches: [{path: {prefix: /jwt-tls}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - jwt:
            jwks: {url: "https://localhost:JWKS/jwks.json", caFile: certs/ca.pem}
            claimsToHeaders: [{claim: sub, header: x-sub}]
    - matches: [{path: {prefix: /jwt-wrong-ca}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - jwt:
            jwks: {url: "https://localhost:JWKS/jwks.json", caFile: certs/other.pem}
    - forward: {backends: [{upstream: echo}]}
"""

CONFIG = EDGE_AND_ECHO + """apiVersion: propylon.dev/v1
kind: Route
metadata: {name: api}
spec:
  rules:
RULES"""


def server_context(pki: Pki, names: list[str | None]) -> ssl.SSLContext:
    """A server context with a certificate for localhost/127.0.0.1 that records each SNI."""
    cert = pki.issue(f"server-{len(names)}-{id(names)}", "localhost", "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert.cert), str(cert.key))
    ctx.sni_callback = lambda _obj, name, _ctx: names.append(name)  # type: ignore[assignment]
    return ctx


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("auth-tls")
    certs = root / "certs"
    pki, stranger = Pki(certs), Pki(certs, "Some other CA")
    (certs / "ca.pem").write_bytes(pki.ca_file.read_bytes())
    (certs / "other.pem").write_bytes(stranger.ca_file.read_bytes())
    auth_sni: list[str | None] = []
    jwks_sni: list[str | None] = []
    auth = AuthService(tls=server_context(pki, auth_sni))
    jwks = JwksServer(tls=server_context(pki, jwks_sni))
    plain = AuthService()  # speaks plain HTTP: the TLS handshake fails
    key, pub = rsa_jwk("tls1")
    jwks.keys = [pub]
    config = (CONFIG.replace("RULES", RULES.strip("\n")).replace("UPSTREAM", str(upstream.port))
              .replace("AUTH", str(auth.port)).replace("JWKS", str(jwks.port))
              .replace("PLAIN", str(plain.port)))
    gw = GatewayProc(root, config)
    yield {"gw": gw, "auth": auth, "jwks": jwks, "key": key, "auth_sni": auth_sni,
           "jwks_sni": jwks_sni, "root": root}
    gw.stop()
    for server in (auth, jwks, plain):
        server.stop()


def gateway_log(env: dict[str, Any]) -> str:
    return (env["root"] / "gateway.log").read_text()


def test_ext_auth_over_https_allows_denies_with_sni_and_keep_alive(env: dict[str, Any]) -> None:
    auth: AuthService = env["auth"]
    port = env["gw"].port
    calls = len(auth.calls)
    status, _, body = request(port, "GET", "/ext-tls/a?x=1", {"authorization": "Bearer good",
                                                             "x-user": "spoofed"})
    assert status == 200, body
    assert echoed(body)["headers"]["x-user"] == "alice"
    method, path, headers = auth.calls[-1]
    assert (method, path) == ("GET", "/check/ext-tls/a?x=1")
    assert headers["host"] == f"localhost:{auth.port}"
    status, resp_headers, body = request(port, "GET", "/ext-tls/b",
                                         {"authorization": "Bearer bad"})
    assert (status, body) == (403, b"denied by policy")
    assert resp_headers["x-deny-reason"] == "bad-token"
    for _ in range(3):
        assert request(port, "GET", "/ext-tls/c", {"authorization": "Bearer good"})[0] == 200
    assert len(auth.calls) == calls + 5  # no cache configured: every request was checked
    # one worker, sequential requests: all five checks went over one kept-alive TLS connection
    assert len(set(auth.peers[calls:])) == 1
    assert env["auth_sni"] and set(env["auth_sni"]) == {"localhost"}  # SNI = the URL's host


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/ext-wrong-ca", 403, id="wrong-ca-fail-closed"),
        pytest.param("/ext-wrong-ca-open", 200, id="wrong-ca-fail-open"),
        pytest.param("/ext-system-ca", 503, id="system-ca-status-on-error"),
        pytest.param("/ext-plain-server", 403, id="handshake-failure"),
    ],
)
def test_ext_auth_tls_failures_are_service_unavailable(
    env: dict[str, Any], path: str, expected: int
) -> None:
    auth: AuthService = env["auth"]
    calls = len(auth.calls)
    status, _, body = request(env["gw"].port, "GET", path, {"authorization": "Bearer good"})
    assert status == expected, body
    if expected != 200:
        assert body == b"authorization service unavailable\n"
    assert len(auth.calls) == calls  # the untrusted service never saw the request
    assert request(env["gw"].port, "GET", "/open")[0] == 200  # the gateway is still fine


def test_ext_auth_tls_failure_is_logged(env: dict[str, Any]) -> None:
    request(env["gw"].port, "GET", "/ext-wrong-ca")
    line = poll_until(lambda: next(
        (ln for ln in gateway_log(env).splitlines()
         if "extAuth service https://localhost" in ln and "CERTIFICATE_VERIFY_FAILED" in ln),
        None))
    assert "unavailable" in line


def test_jwks_over_https_token_accepted(env: dict[str, Any]) -> None:
    jwks: JwksServer = env["jwks"]
    token = mint(env["key"], "RS256", "tls1")
    status, _, body = request(env["gw"].port, "GET", "/jwt-tls",
                              {"authorization": f"Bearer {token}"})
    assert status == 200, body
    assert echoed(body)["headers"]["x-sub"] == "u1"
    assert jwks.fetches >= 1
    assert set(env["jwks_sni"]) == {"localhost"}


def test_jwks_over_https_wrong_ca_refuses(env: dict[str, Any]) -> None:
    jwks: JwksServer = env["jwks"]
    fetches = jwks.fetches
    token = mint(env["key"], "RS256", "tls1")
    status, headers, _ = request(env["gw"].port, "GET", "/jwt-wrong-ca",
                                 {"authorization": f"Bearer {token}"})
    assert status == 401
    assert 'error_description="unknown signing key"' in headers["www-authenticate"]
    assert jwks.fetches == fetches  # no key set was ever served to the untrusting cache
    poll_until(lambda: "JWKS fetch from https://localhost" in gateway_log(env)
               and "CERTIFICATE_VERIFY_FAILED" in gateway_log(env))


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        pytest.param('{extAuth: {url: "https://localhost:1/", caFile: missing.pem}}',
                     "extAuth.caFile", id="ext-auth"),
        pytest.param('{jwt: {jwks: {url: "https://localhost:1/k", caFile: not-a-ca.pem}}}',
                     "jwt.jwks.caFile", id="jwks"),
    ],
)
def test_unloadable_ca_file_is_an_error_with_its_field(
    tmp_path: Path, upstream: Upstream, policy: str, field: str
) -> None:
    # `run` contains it (the rule's Route answers the invalid-route response, see
    # tests/integration/test_containment.py); `validate` refuses it
    (tmp_path / "not-a-ca.pem").write_text("this is not a certificate\n")
    config = CONFIG.replace("UPSTREAM", str(upstream.port)).replace(
        "RULES", f"    - forward: {{backends: [{{upstream: echo}}]}}\n      policies: [{policy}]")
    (tmp_path / "gateway.yaml").write_text(config.replace("$PORT", str(free_port())))
    proc = subprocess.run(
        [sys.executable, "-m", "propylon", "validate", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert f"{field}: cannot load CA file" in output, output
