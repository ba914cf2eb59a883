"""A Redis that asks for a login, for ``rateLimit`` (global mode) and the ``cache``'s Redis
store: a real redis-server started with ``--requirepass`` and an ACL user of its own; each
password read from a secret (a file, or an environment variable). The right login works; a
wrong, missing or unreadable one fails as a Redis that is down does (``failureMode``; a cache
miss), with a log line that says why and never holds a password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.policies._helpers import (
    EDGE_AND_ECHO,
    GatewayProc,
    RedisServer,
    Upstream,
    poll_until,
    request,
)

PASSWORD = "default-user-pw-7f3a"
USER, USER_PASSWORD = "gateway", "gateway-user-pw-91c2"
WRONG = "not-the-pw-55d0"
SECRETS = (PASSWORD, USER_PASSWORD, WRONG)

# (path, redis login, failure mode)
LIMITS = [
    ("/rl-env", "password: {secretRef: {env: TEST_REDIS_PASSWORD}}", "closed"),
    ("/rl-user", f"username: {USER}, password: {{secretRef: {{file: user.pass}}}}", "closed"),
    ("/rl-wrong-closed", "password: {secretRef: {file: wrong.pass}}", "closed"),
    ("/rl-wrong-open", "password: {secretRef: {file: wrong.pass}}", "open"),
    ("/rl-none-closed", "", "closed"),
    ("/rl-unreadable-closed", "password: {secretRef: {file: missing.pass}}", "closed"),
]
CACHES = [
    ("/cache-right", "password: {secretRef: {file: default.pass}}"),
    ("/cache-wrong", "password: {secretRef: {file: wrong.pass}}"),
]


def rule(path: str, policy: str) -> str:
    return (f"    - matches: [{{path: {{prefix: {path}}}}}]\n"
            "      forward: {backends: [{upstream: echo}]}\n"
            f"      policies: [{policy}]\n")


def config(port: int) -> str:
    address = f'address: "127.0.0.1:{port}", timeout: 500ms'
    rules = [rule(path, f"{{rateLimit: {{mode: global, failureMode: {mode}, redis: "
                        f"{{{address}, {login}}}, limits: [{{requests: 1, per: 1h}}]}}}}")
             for path, login, mode in LIMITS]
    rules += [rule(path, f"{{cache: {{store: redis, defaultTtl: 60s, redis: {{{address}, "
                         f"prefix: 'auth{path}', {login}}}}}}}") for path, login in CACHES]
    return (EDGE_AND_ECHO + "apiVersion: propylon.dev/v1\nkind: Route\nmetadata: {name: api}\n"
            "spec:\n  rules:\n" + "".join(rules))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
          ) -> Iterator[dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("redis-auth")
    server = RedisServer(root, "--requirepass", PASSWORD,
                         "--user", USER, "on", f">{USER_PASSWORD}", "~*", "&*", "+@all")
    client = redis.Redis(port=server.port, password=PASSWORD)
    try:
        gw = GatewayProc(root / "gw", config(server.port).replace("UPSTREAM", str(upstream.port)),
                         files={"default.pass": PASSWORD + "\n", "user.pass": USER_PASSWORD,
                                "wrong.pass": WRONG},
                         env={"TEST_REDIS_PASSWORD": PASSWORD})
        try:
            yield {"gw": gw, "redis": client}
        finally:
            gw.stop()
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize("path", ["/rl-env", "/rl-user"])
def test_the_right_login_counts_in_redis(setup: dict[str, Any], path: str) -> None:
    gw = setup["gw"]
    assert [request(gw.port, "GET", path)[0] for _ in range(2)] == [200, 429]


@pytest.mark.parametrize(("path", "expected"), [
    pytest.param("/rl-wrong-closed", [503, 503], id="wrong-closed"),
    pytest.param("/rl-wrong-open", [200, 200], id="wrong-open"),
    pytest.param("/rl-none-closed", [503, 503], id="none-closed"),
    pytest.param("/rl-unreadable-closed", [503, 503], id="unreadable-closed"),
])
def test_a_refused_login_is_a_redis_down(setup: dict[str, Any], path: str,
                                         expected: list[int]) -> None:
    answers = [request(setup["gw"].port, "GET", path) for _ in range(2)]
    assert [status for status, _, _ in answers] == expected
    if expected[0] == 503:
        assert all(headers["retry-after"] == "1" for _, headers, _ in answers)


def test_the_cache_logs_in(setup: dict[str, Any]) -> None:
    gw, client = setup["gw"], setup["redis"]
    assert request(gw.port, "GET", "/cache-right")[1]["x-propylon-cache"] == "miss"
    poll_until(lambda: client.keys("auth/cache-right:k:*"), 5)  # stored after the answer
    assert request(gw.port, "GET", "/cache-right")[1]["x-propylon-cache"] == "hit"


def test_a_cache_with_a_wrong_login_misses(setup: dict[str, Any]) -> None:
    gw, client = setup["gw"], setup["redis"]
    caches = [request(gw.port, "GET", "/cache-wrong")[1]["x-propylon-cache"] for _ in range(2)]
    assert caches == ["miss", "miss"]
    assert not client.keys("auth/cache-wrong:*")


def test_the_log_says_why_and_never_a_password(setup: dict[str, Any]) -> None:
    gw = setup["gw"]
    for path in ("/rl-wrong-closed", "/rl-none-closed", "/rl-unreadable-closed", "/cache-wrong"):
        request(gw.port, "GET", path)
    config_answer = request(gw.admin, "GET", "/config")[2].decode()
    log = (gw.dir / "gateway.log").read_text()
    assert "authentication refused (check redis.username and redis.password)" in log, log
    assert "redis.password could not be read: cannot read secret file missing.pass" in log, log
    assert "get failed: authentication refused (check redis.username" in log, log
    for secret in SECRETS:
        assert secret not in log and secret not in config_answer, secret
