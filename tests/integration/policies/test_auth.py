"""apiKey, basicAuth, jwt and extAuth against a real gateway, JWKS server and auth service."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.integration.policies._helpers import (
    EDGE_AND_ECHO,
    GatewayProc,
    Upstream,
    echoed,
    free_port,
    poll_until,
    request,
    request_fields,
)


def serve(server: ThreadingHTTPServer, tls: ssl.SSLContext | None) -> None:
    """Start ``server`` in a thread; with ``tls`` its connections are TLS (each handshake in
    the connection's own thread, so a refused one never stalls the accept loop)."""
    server.handle_error = lambda *args: None  # type: ignore[method-assign]
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()


class JwksServer:
    """Serves ``keys`` at /jwks.json with ``max-age``; counts fetches. ``tls``: over TLS."""

    def __init__(self, max_age: int = 300, tls: ssl.SSLContext | None = None) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.max_age = max_age
        self.fail = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                if owner.fail:
                    self.send_response(500)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", f"public, max-age={owner.max_age}")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        serve(self.server, tls)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AuthService:
    """An ext_authz HTTP service: allows ``authorization: Bearer good``, denies others (and a
    request with more than one ``authorization``). ``peers`` has the client address of each
    call; ``tls``: served over TLS."""

    def __init__(self, delay: float = 0.0, tls: ssl.SSLContext | None = None) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.peers: list[tuple[str, int]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.answer()

            def do_POST(self) -> None:
                self.answer()

            def answer(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.calls.append((self.command, self.path, headers))
                owner.peers.append(self.client_address)
                if delay:
                    time.sleep(delay)
                if len(self.headers.get_all("authorization") or ()) > 1:
                    headers["authorization"] = "several"  # one credential, or none: denied
                if headers.get("authorization") == "Bearer good":
                    self.send_response(200)
                    self.send_header("x-user", "alice")
                    self.send_header("x-internal", "no")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if headers.get("authorization") == "Bearer anonymous":  # allowed, no x-user
                    self.send_response(200)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if headers.get("authorization") == "Bearer expired":  # a challenge
                    self.send_response(401)
                    self.send_header("www-authenticate", 'Bearer realm="auth", error="expired"')
                    self.send_header("x-internal", "no")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = b"denied by policy"
                self.send_response(403)
                self.send_header("x-deny-reason", "bad-token")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        serve(self.server, tls)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rsa_jwk(kid: str) -> tuple[Any, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return key, {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def ec_jwk(kid: str) -> tuple[Any, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return key, {**jwk, "kid": kid, "alg": "ES256"}


def mint(key: Any, alg: str, kid: str | None, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "https://issuer.test", "aud": "shop", "sub": "u1", "iat": now,
            "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


CONFIG = EDGE_AND_ECHO + """apiVersion: propylon.dev/v1
kind: Consumer
metadata: {name: acme, labels: {tier: gold}}
spec:
  credentials:
    apiKeys: [{secretRef: {file: acme.key}}]
    basicAuth: [{username: alice, secretRef: {env: ALICE_PASSWORD}}]
---
apiVersion: propylon.dev/v1
kind: Consumer
metadata: {name: broken}
spec:
  credentials:
    apiKeys: [{secretRef: {env: NOT_SET_ANYWHERE}}]
---
apiVersion: propylon.dev/v1
kind: Consumer
metadata: {name: carol-a}
spec:
  credentials:
    basicAuth: [{username: carol, secretRef: {file: carol-a.pw}}]
---
apiVersion: propylon.dev/v1
kind: Consumer
metadata: {name: carol-b, namespace: team-b}
spec:
  credentials:
    basicAuth: [{username: carol, secretRef: {file: carol-b.pw}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: api}
spec:
  rules:
    - matches: [{path: {prefix: /key}}]
      forward: {backends: [{upstream: echo}]}
      policies: [{apiKey: {header: x-api-key, query: api_key}}]
    - matches: [{path: {prefix: /basic}}]
      forward: {backends: [{upstream: echo}]}
      policies: [{basicAuth: {realm: shop}}]
    - matches: [{path: {prefix: /jwt}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - jwt:
            jwks: {url: "http://127.0.0.1:JWKS/jwks.json", minRefreshInterval: 100ms}
            issuer: https://issuer.test
            audiences: [shop]
            clockSkew: 5s
            requiredClaims: [sub]
            claimsToHeaders: [{claim: sub, header: x-user}, {claim: roles, header: x-roles}]
    - matches: [{path: {prefix: /file}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - jwt:
            keys: [{file: ed.pem}]
            algorithms: [EdDSA]
            tokenFrom: [{cookie: session}, {header: x-token}]
    - matches: [{path: {prefix: /kept}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - jwt:
            keys: [{file: ed.pem}]
            algorithms: [EdDSA]
            tokenFrom: [{cookie: session}, {header: x-token}]
            forwardToken: false
    - matches: [{path: {prefix: /ext}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - extAuth:
            url: "http://127.0.0.1:AUTH/check"
            headersToAuth: [authorization]
            upstreamHeaders: [x-user]
            clientHeaders: [x-deny-reason]
            cache: {ttl: 30s, keyHeaders: [authorization]}
    - matches: [{path: {prefix: /slow}}]
      forward: {backends: [{upstream: echo}]}
      policies: [{extAuth: {url: "http://127.0.0.1:SLOW/", timeout: 200ms}}]
    - matches: [{path: {prefix: /down-open}}]
      forward: {backends: [{upstream: echo}]}
      policies: [{extAuth: {url: "http://127.0.0.1:DOWN/", failOpen: true,
                            upstreamHeaders: [x-user]}}]
    - matches: [{path: {prefix: /down-closed}}]
      forward: {backends: [{upstream: echo}]}
      policies: [{extAuth: {url: "http://127.0.0.1:DOWN/"}}]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("auth")
    jwks, auth, slow = JwksServer(), AuthService(), AuthService(delay=1.0)
    rsa_key, rsa_pub = rsa_jwk("k1")
    jwks.keys = [rsa_pub]
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_pem = ed_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    config = (CONFIG.replace("UPSTREAM", str(upstream.port)).replace("JWKS", str(jwks.port))
              .replace("AUTH", str(auth.port)).replace("SLOW", str(slow.port))
              .replace("DOWN", str(free_port())))
    gw = GatewayProc(root, config, files={"acme.key": "k-acme-0123456789\n", "ed.pem": ed_pem,
                                     "carol-a.pw": "pw-a", "carol-b.pw": "pw-b"},
                     env={"ALICE_PASSWORD": "s3cret"})
    yield {"gw": gw, "jwks": jwks, "auth": auth, "rsa": rsa_key, "ed": ed_key}
    gw.stop()
    for server in (jwks, auth, slow):
        server.stop()


def test_api_key_in_header_identifies_consumer_and_is_removed(env: dict[str, Any]) -> None:
    port = env["gw"].port
    status, _, body = request(port, "GET", "/key/a", {"x-api-key": "k-acme-0123456789",
                                                     "x-consumer-name": "spoofed"})
    assert status == 200
    seen = echoed(body)["headers"]
    assert "x-api-key" not in seen
    assert seen["x-consumer-name"] == "acme"
    assert seen["x-consumer-labels"] == "tier=gold"


def test_api_key_in_query_is_removed(env: dict[str, Any]) -> None:
    status, _, body = request(env["gw"].port, "GET", "/key/q?a=1&api_key=k-acme-0123456789&b=2")
    assert status == 200
    assert echoed(body)["target"] == "/key/q?a=1&b=2"


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}], ids=["missing", "unknown"])
def test_api_key_rejected(env: dict[str, Any], headers: dict[str, str]) -> None:
    status, resp_headers, _ = request(env["gw"].port, "GET", "/key/a", headers)
    assert status == 401
    assert resp_headers["www-authenticate"].startswith("ApiKey")


KEY = "k-acme-0123456789"


@pytest.mark.parametrize(
    ("target", "fields"),
    [
        pytest.param(f"/key/q?api_key={KEY}&api_key=other", [], id="query-twice"),
        pytest.param(f"/key/q?api_key={KEY}&api%5Fkey=other", [], id="query-encoded-name"),
        pytest.param(f"/key/q?api_key={KEY}&api_key", [], id="query-bare-name"),
        pytest.param(f"/key/q?api_key={KEY}&api_key={KEY}", [], id="query-same-twice"),
        pytest.param("/key/q?api_key=other", [("x-api-key", KEY)], id="header-and-query"),
        pytest.param("/key/q", [("x-api-key", KEY), ("x-api-key", "other")], id="header-twice"),
    ],
)
def test_api_key_given_more_than_once_is_refused(
        env: dict[str, Any], upstream: Upstream, target: str, fields: list[tuple[str, str]]
) -> None:
    """Before, the first copy was checked and removed and the others reached the upstream."""
    status, headers, body = request_fields(env["gw"].port, "GET", target, fields)
    assert (status, body) == (401, b"unauthorized: more than one API key\n"), body
    assert headers["www-authenticate"].startswith("ApiKey")


def test_api_key_single_copy_in_encoded_query_is_removed(env: dict[str, Any]) -> None:
    status, _, body = request(env["gw"].port, "GET", f"/key/q?a=1&api%5Fkey={KEY}&b=%41")
    assert status == 200
    assert echoed(body)["target"] == "/key/q?a=1&b=%41"


def test_basic_auth_with_two_authorization_fields_is_refused(env: dict[str, Any]) -> None:
    good = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    for second in (good, "Basic " + base64.b64encode(b"mallory:x").decode()):
        status, headers, body = request_fields(
            env["gw"].port, "GET", "/basic", [("authorization", good), ("authorization", second)])
        assert (status, body) == (401, b"unauthorized: more than one Authorization header\n")
        assert headers["www-authenticate"] == 'Basic realm="shop", charset="UTF-8"'


def test_jwt_given_twice_is_refused(env: dict[str, Any]) -> None:
    """A verified token and a forged one: before, the first was verified and both went
    upstream, where a service reading the last copy took the forged claims."""
    good = mint(env["rsa"], "RS256", "k1")
    forged = jwt.encode({"sub": "admin", "exp": int(time.time()) + 60}, "x" * 32,
                        algorithm="HS256")
    status, headers, body = request_fields(
        env["gw"].port, "GET", "/jwt",
        [("authorization", f"Bearer {good}"), ("authorization", f"Bearer {forged}")])
    assert (status, body) == (400, b"bad request: more than one token\n")
    assert 'error="invalid_request"' in headers["www-authenticate"]
    ed = mint(env["ed"], "EdDSA", None)
    status, _, _ = request_fields(env["gw"].port, "GET", "/file",
                                  [("cookie", f"session={ed}; session={forged}")])
    assert status == 400
    status, _, _ = request_fields(env["gw"].port, "GET", "/file",
                                  [("cookie", f"session={ed}"), ("cookie", "session=x")])
    assert status == 400
    assert request(env["gw"].port, "GET", "/file", {"cookie": f"session={ed}"})[0] == 200


def test_secrets_only_hashed_and_bad_consumer_invalid(env: dict[str, Any]) -> None:
    config = env["gw"].config()
    text = json.dumps(config)
    assert "k-acme-0123456789" not in text
    assert "s3cret" not in text
    broken = next(s for s in config["statuses"] if s["key"] == "default/broken")
    assert broken["state"] == "Invalid"
    assert "environment variable NOT_SET_ANYWHERE is not set" in broken["reasons"][0]
    assert [c["name"] for c in config.get("consumers", [])] == ["acme"]


def test_basic_auth_username_of_two_consumers_is_refused(env: dict[str, Any]) -> None:
    """Two Consumers with the user ``carol``: before, both were Accepted and the first by key
    (``default/carol-a``) took the name, so ``team-b/carol-b``'s carol never authenticated
    (401 with the right password) and nothing said why. Now the name identifies neither, as a
    shared API key: both Consumers are Invalid with the reason, and carol is refused."""
    config = env["gw"].config()
    for key, other in (("default/carol-a", "team-b/carol-b"),
                       ("team-b/carol-b", "default/carol-a")):
        status = next(s for s in config["statuses"] if s["key"] == key)
        assert status["state"] == "Invalid"
        assert status["reasons"] == [
            f'basic-auth username "carol" is also used by Consumer {other}']
    for password in ("pw-a", "pw-b"):
        token = base64.b64encode(f"carol:{password}".encode()).decode()
        assert request(env["gw"].port, "GET", "/basic",
                       {"authorization": f"Basic {token}"})[0] == 401
    alice = base64.b64encode(b"alice:s3cret").decode()
    assert request(env["gw"].port, "GET", "/basic", {"authorization": f"Basic {alice}"})[0] == 200


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        pytest.param("alice", "s3cret", 200, id="good"),
        pytest.param("alice", "wrong", 401, id="bad-password"),
        pytest.param("mallory", "s3cret", 401, id="unknown-user"),
    ],
)
def test_basic_auth(env: dict[str, Any], user: str, password: str, expected: int) -> None:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    status, headers, body = request(env["gw"].port, "GET", "/basic", {"authorization":
                                                                      f"Basic {token}"})
    assert status == expected
    if expected == 200:
        seen = echoed(body)["headers"]
        assert seen["x-consumer-name"] == "acme"
        assert "authorization" not in seen
    else:
        assert headers["www-authenticate"] == 'Basic realm="shop", charset="UTF-8"'


def test_jwt_from_jwks_and_claims_to_headers(env: dict[str, Any]) -> None:
    token = mint(env["rsa"], "RS256", "k1", roles=["admin", "dev"])
    status, _, body = request(env["gw"].port, "GET", "/jwt",
                              {"authorization": f"Bearer {token}", "x-user": "spoofed"})
    assert status == 200, body
    seen = echoed(body)["headers"]
    assert seen["x-user"] == "u1"
    assert seen["x-roles"] == '["admin","dev"]'


def test_jwt_remembered_token_is_matched_whole(env: dict[str, Any]) -> None:
    """A verified token is remembered by its signature's end; another payload under the same
    signature (same end) is verified on its own, and fails."""
    token = mint(env["rsa"], "RS256", "k1")
    auth = {"authorization": f"Bearer {token}"}
    for _ in range(2):  # verified, then served from the remembered tokens
        assert request(env["gw"].port, "GET", "/jwt", auth)[0] == 200
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{header}.{forged_payload}.{signature}"
    status, headers, _ = request(env["gw"].port, "GET", "/jwt",
                                 {"authorization": f"Bearer {forged}"})
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert request(env["gw"].port, "GET", "/jwt", auth)[0] == 200


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        # times are offsets from the moment the test runs (collection may be minutes earlier)
        pytest.param({"exp": -60}, "token expired", id="expired"),
        pytest.param({"nbf": +60}, "token not valid yet", id="not-yet"),
        pytest.param({"iss": "https://evil.test"}, "issuer not allowed", id="issuer"),
        pytest.param({"aud": "other"}, "audience not allowed", id="audience"),
        pytest.param({"sub": None}, "claim sub missing", id="required-claim"),
    ],
)
def test_jwt_claim_checks(env: dict[str, Any], claims: dict[str, Any], reason: str) -> None:
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf") else v for k, v in claims.items()}
    token = mint(env["rsa"], "RS256", "k1", **claims)
    if claims.get("sub", "x") is None:
        payload = jwt.decode(token, options={"verify_signature": False})
        payload.pop("sub")
        token = jwt.encode(payload, env["rsa"], algorithm="RS256", headers={"kid": "k1"})
    status, headers, _ = request(env["gw"].port, "GET", "/jwt", {"authorization":
                                                                 f"Bearer {token}"})
    assert status == 401
    assert f'error_description="{reason}"' in headers["www-authenticate"]


def test_jwt_within_clock_skew(env: dict[str, Any]) -> None:
    token = mint(env["rsa"], "RS256", "k1", exp=int(time.time()) - 2)
    assert request(env["gw"].port, "GET", "/jwt", {"authorization": f"Bearer {token}"})[0] == 200


def test_jwt_missing_token_and_hs256_confusion(env: dict[str, Any]) -> None:
    status, headers, _ = request(env["gw"].port, "GET", "/jwt")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="propylon"'
    forged = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "s" * 32, algorithm="HS256",
                        headers={"kid": "k1"})
    assert request(env["gw"].port, "GET", "/jwt", {"authorization": f"Bearer {forged}"})[0] == 401


def test_jwks_key_rotation_picked_up(env: dict[str, Any]) -> None:
    jwks: JwksServer = env["jwks"]
    new_key, new_pub = ec_jwk("k2")
    token = mint(new_key, "ES256", "k2")
    fetches = jwks.fetches
    jwks.keys = [new_pub]  # k1 retired, k2 published: an unknown kid triggers a fetch
    time.sleep(0.15)  # minRefreshInterval since the last fetch
    status, _, body = request(env["gw"].port, "GET", "/jwt", {"authorization": f"Bearer {token}"})
    assert status == 200, body
    assert jwks.fetches == fetches + 1
    # the stale set is kept when the JWKS server fails
    jwks.fail = True
    try:
        time.sleep(0.15)
        unknown = mint(new_key, "ES256", "k3")
        assert request(env["gw"].port, "GET", "/jwt",
                       {"authorization": f"Bearer {unknown}"})[0] == 401
        token2 = mint(new_key, "ES256", "k2", sub="u2")
        assert request(env["gw"].port, "GET", "/jwt",
                       {"authorization": f"Bearer {token2}"})[0] == 200
    finally:
        jwks.fail = False
        jwks.keys = [*jwks.keys]


def test_jwt_key_file_and_cookie(env: dict[str, Any]) -> None:
    token = mint(env["ed"], "EdDSA", None)
    port = env["gw"].port
    assert request(port, "GET", "/file", {"cookie": f"a=b; session={token}"})[0] == 200
    assert request(port, "GET", "/file", {"x-token": token})[0] == 200
    rsa_token = mint(env["rsa"], "RS256", None)
    assert request(port, "GET", "/file", {"x-token": rsa_token})[0] == 401


def test_jwt_not_forwarded_from_a_cookie(env: dict[str, Any]) -> None:
    """``forwardToken: false`` with the token in a cookie: before, only a header source was
    stripped and the cookie went upstream with the token; now the cookie is taken out of the
    ``cookie`` field (the others kept; a field left empty is removed)."""
    token = mint(env["ed"], "EdDSA", None)
    port = env["gw"].port
    status, _, body = request_fields(port, "GET", "/kept", [
        ("cookie", f"a=b; session={token}; c=d"), ("cookie", "e=f")])
    assert status == 200, body
    cookies = [v for n, v in json.loads(body)["headers"] if n == "cookie"]
    assert token not in json.dumps(cookies)
    assert cookies in (["a=b; c=d", "e=f"], ["a=b; c=d; e=f"]), cookies
    status, _, body = request(port, "GET", "/kept", {"cookie": f"session={token}"})
    assert status == 200, body
    assert "cookie" not in echoed(body)["headers"]
    status, _, body = request(port, "GET", "/kept", {"x-token": token})
    assert status == 200, body
    assert "x-token" not in echoed(body)["headers"]


def test_ext_auth_allows_denies_and_caches(env: dict[str, Any]) -> None:
    auth: AuthService = env["auth"]
    port = env["gw"].port
    status, _, body = request(port, "GET", "/ext/a?x=1", {"authorization": "Bearer good",
                                                         "x-user": "spoofed"})
    assert status == 200
    assert echoed(body)["headers"]["x-user"] == "alice"
    assert "x-internal" not in echoed(body)["headers"]
    method, path, headers = auth.calls[-1]
    assert (method, path) == ("GET", "/check/ext/a?x=1")
    assert headers["authorization"] == "Bearer good"
    status, resp_headers, body = request(port, "GET", "/ext/b", {"authorization": "Bearer bad"})
    assert (status, body) == (403, b"denied by policy")
    assert resp_headers["x-deny-reason"] == "bad-token"
    calls = len(auth.calls)
    for _ in range(3):
        assert request(port, "GET", "/ext/c", {"authorization": "Bearer good"})[0] == 200
    assert len(auth.calls) == calls  # decisions cached for the ttl


def test_ext_auth_cache_keys_on_every_copy_of_a_key_header(env: dict[str, Any]) -> None:
    """``Bearer good`` is allowed and cached; then a request with a second authorization
    before it. The service sees both copies (and refuses a request with two credentials),
    so the cache must not answer it with the decision made for ``Bearer good`` alone: before,
    the key was the last copy, the cached allow let the request through unasked and the
    upstream got ``Bearer forged`` first. The key is every copy, in order."""
    auth: AuthService = env["auth"]
    port = env["gw"].port
    good = [("authorization", "Bearer good")]
    assert request_fields(port, "GET", "/ext/dup", good)[0] == 200
    calls = len(auth.calls)
    for _ in range(2):  # asked, then from the cache
        status, _, body = request_fields(port, "GET", "/ext/dup",
                                         [("authorization", "Bearer forged"), *good])
        assert (status, body) == (403, b"denied by policy")
    assert len(auth.calls) == calls + 1
    assert request_fields(port, "GET", "/ext/dup", good)[0] == 200  # its own entry
    assert len(auth.calls) == calls + 1


def test_ext_auth_upstream_headers_only_from_the_service(env: dict[str, Any]) -> None:
    """An allowing answer without ``x-user`` (an upstreamHeaders name): before, the client's
    own ``x-user: admin`` reached the upstream, which trusts that name to come from the
    service; now every client-sent copy is dropped (also on a cached decision)."""
    for _ in range(2):  # asked, then from the cache
        status, _, body = request_fields(env["gw"].port, "GET", "/ext/anon", [
            ("authorization", "Bearer anonymous"), ("x-user", "admin"), ("X-User", "root")])
        assert status == 200, body
        assert "x-user" not in echoed(body)["headers"]


def test_ext_auth_fail_open_drops_client_upstream_headers(env: dict[str, Any]) -> None:
    """The service is down and ``failOpen`` lets the request through: before, the client's
    ``x-user: admin`` (an upstreamHeaders name) reached the upstream as if the service had
    said it; now it is dropped as on an allowing answer without it."""
    status, _, body = request(env["gw"].port, "GET", "/down-open", {"x-user": "admin"})
    assert status == 200, body
    assert "x-user" not in echoed(body)["headers"]


def test_ext_auth_challenge_reaches_the_client(env: dict[str, Any]) -> None:
    """A 401 of the service with ``WWW-Authenticate`` (not in clientHeaders): before, the
    client got a 401 without a challenge (RFC 9110 §11.6.1 requires one); other fields of
    the answer still stay behind unless listed."""
    for _ in range(2):  # asked, then from the cache
        status, headers, _ = request(env["gw"].port, "GET", "/ext/x",
                                     {"authorization": "Bearer expired"})
        assert status == 401
        assert headers["www-authenticate"] == 'Bearer realm="auth", error="expired"'
        assert "x-internal" not in headers


def test_ext_auth_timeout_and_failure_modes(env: dict[str, Any]) -> None:
    port = env["gw"].port
    start = time.monotonic()
    assert request(port, "GET", "/slow")[0] == 403
    assert time.monotonic() - start < 0.9
    assert request(port, "GET", "/down-open")[0] == 200
    assert request(port, "GET", "/down-closed")[0] == 403


def test_reload_keeps_working(env: dict[str, Any]) -> None:
    poll_until(lambda: request(env["gw"].port, "GET", "/open")[0] in (200, 404))


def jwks_gateway(tmp_path: Path, upstream: Upstream, jwks: JwksServer,
                 min_refresh: str | None = None) -> GatewayProc:
    """A gateway whose ``/jwt`` rule takes tokens signed with ``jwks``' keys."""
    refresh = f", minRefreshInterval: {min_refresh}" if min_refresh else ""
    config = (EDGE_AND_ECHO + f"""apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: api}}
spec:
  rules:
    - matches: [{{path: {{prefix: /jwt}}}}]
      forward: {{backends: [{{upstream: echo}}]}}
      policies: [{{jwt: {{jwks: {{url: "http://127.0.0.1:{jwks.port}/jwks.json"{refresh}}}}}}}]
""").replace("UPSTREAM", str(upstream.port))
    return GatewayProc(tmp_path, config)


def test_jwks_down_without_keys_is_not_fetched_per_request(
        tmp_path: Path, upstream: Upstream) -> None:
    """The JWKS endpoint fails from the start (no key set yet). Before, every request with a
    token started (and waited for) a fetch of its own: 20 requests, 20 fetches, the IdP
    hammered at the clients' rate. Now a failed fetch holds the next one back for
    ``minRefreshInterval`` (as Envoy's ``failed_refetch_duration``): the requests in between
    are refused at once (401 ``unknown signing key``); when the endpoint is back, the first
    request after the interval fetches and is admitted."""
    jwks = JwksServer()
    key, pub = rsa_jwk("k1")
    jwks.keys = [pub]
    jwks.fail = True
    gw = jwks_gateway(tmp_path, upstream, jwks, "2s")
    try:
        auth = {"authorization": f"Bearer {mint(key, 'RS256', 'k1')}"}
        for _ in range(20):
            status, headers, _ = request(gw.port, "GET", "/jwt", auth)
            assert status == 401
            assert 'error_description="unknown signing key"' in headers["www-authenticate"]
        # the first request's, and the refresher's retries (1 s, 2 s backoff) under a slow CI
        assert 1 <= jwks.fetches <= 3
        jwks.fail = False
        poll_until(lambda: request(gw.port, "GET", "/jwt", auth)[0] == 200, timeout=10,
                   interval=0.2)
    finally:
        gw.stop()
        jwks.stop()


def test_jwks_encryption_keys_do_not_verify_tokens(
        tmp_path: Path, upstream: Upstream) -> None:
    """A JWKS key published with ``"use": "enc"`` is for encrypting to its owner, not for
    signatures (RFC 7517 §4.2): before, a token signed with it was admitted; now such keys
    (and keys whose ``key_ops`` leave out ``verify``) are skipped, and the ``sig`` one works."""
    jwks = JwksServer()
    enc_key, enc_pub = rsa_jwk("enc1")
    ops_key, ops_pub = rsa_jwk("ops1")
    sig_key, sig_pub = rsa_jwk("sig1")
    jwks.keys = [{**enc_pub, "use": "enc"}, {**ops_pub, "key_ops": ["encrypt"]}, sig_pub]
    gw = jwks_gateway(tmp_path, upstream, jwks)
    try:
        for key, kid in ((enc_key, "enc1"), (ops_key, "ops1")):
            status, headers, _ = request(gw.port, "GET", "/jwt", {
                "authorization": f"Bearer {mint(key, 'RS256', kid)}"})
            assert status == 401, kid
            assert 'error_description="unknown signing key"' in headers["www-authenticate"]
        assert request(gw.port, "GET", "/jwt", {
            "authorization": f"Bearer {mint(sig_key, 'RS256', 'sig1')}"})[0] == 200
    finally:
        gw.stop()
        jwks.stop()


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        pytest.param('{basicAuth: {realm: "T\u014dky\u014d"}}', "basicAuth.realm", id="not-ascii"),
        pytest.param("""{jwt: {keys: [{file: hs.key, algorithm: HS256}], algorithms: [HS256],
                     realm: 'shop", error="none'}}""", "jwt.realm", id="quote"),
        pytest.param(r'{basicAuth: {realm: "a\\"}}', "basicAuth.realm", id="backslash"),
    ],
)
def test_realm_that_would_break_the_challenge_is_refused(
        tmp_path: Path, upstream: Upstream, policy: str, field: str) -> None:
    """Before: a non-latin-1 realm failed the rule with a codec error ("'latin-1' codec can't
    encode..."), and a realm with ``"`` was accepted and ended the quoted string, adding its
    own parameters to the challenge (``Bearer realm="shop", error="none"``). Now both are
    validation errors at the field."""
    (tmp_path / "hs.key").write_text("secret-0123456789\n")
    config = (EDGE_AND_ECHO + """apiVersion: propylon.dev/v1
kind: Route
metadata: {name: api}
spec:
  rules:
    - forward: {backends: [{upstream: echo}]}
      policies: [POLICY]
""").replace("UPSTREAM", str(upstream.port)).replace("POLICY", policy)
    (tmp_path / "gateway.yaml").write_text(config.replace("$PORT", str(free_port())))
    proc = subprocess.run([sys.executable, "-m", "propylon", "validate", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert f'{field}: a realm is printable ASCII without " or \\' in output, output


def test_ext_auth_cache_keyed_on_a_header_the_service_never_sees_is_refused(
        tmp_path: Path, upstream: Upstream) -> None:
    """``keyHeaders: [x-tenant]`` with the default ``headersToAuth`` (authorization, cookie):
    before, it was accepted, and the decision the service made for ``authorization: Bearer
    good`` + ``x-tenant: t1`` was reused for any request with ``x-tenant: t1``, without
    credentials (a bypass). Now it is a validation error at the policy."""
    config = (EDGE_AND_ECHO + """apiVersion: propylon.dev/v1
kind: Route
metadata: {name: api}
spec:
  rules:
    - forward: {backends: [{upstream: echo}]}
      policies: [{extAuth: {url: "http://127.0.0.1:1/", cache: {ttl: 30s, keyHeaders: KEYS}}}]
""").replace("UPSTREAM", str(upstream.port))
    for keys, refused in (("[x-tenant]", True), ("[authorization, x-tenant]", True),
                          ("[authorization, cookie]", False)):
        (tmp_path / "gateway.yaml").write_text(
            config.replace("KEYS", keys).replace("$PORT", str(free_port())))
        proc = subprocess.run([sys.executable, "-m", "propylon", "validate", str(tmp_path)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        output = proc.stdout + proc.stderr
        assert (proc.returncode != 0) == refused, output
        if refused:
            assert ('extAuth: cache.keyHeaders: "x-tenant" is not in headersToAuth'
                    in output), output


def test_jwks_answer_that_is_not_a_key_set_is_a_failed_fetch(
        tmp_path: Path, upstream: Upstream) -> None:
    """The JWKS endpoint answers 200 with JSON that is not a key set (``{"keys": 5}``).
    Before, parsing raised outside the fetch's error handling: the request waiting for the
    fetch got a 500 and no failure was logged. Now it is a failed fetch like a 500 answer:
    401 ``unknown signing key``, logged, and the keys are picked up once the set is fixed."""
    jwks = JwksServer()
    key, pub = rsa_jwk("k1")
    jwks.keys = 5  # type: ignore[assignment]
    gw = jwks_gateway(tmp_path, upstream, jwks, "200ms")
    try:
        auth = {"authorization": f"Bearer {mint(key, 'RS256', 'k1')}"}
        status, headers, body = request(gw.port, "GET", "/jwt", auth)
        assert status == 401, body
        assert 'error_description="unknown signing key"' in headers["www-authenticate"]
        poll_until(lambda: "JWKS fetch from" in (tmp_path / "gateway.log").read_text())
        jwks.keys = [pub]
        poll_until(lambda: request(gw.port, "GET", "/jwt", auth)[0] == 200, timeout=10,
                   interval=0.3)
    finally:
        gw.stop()
        jwks.stop()
