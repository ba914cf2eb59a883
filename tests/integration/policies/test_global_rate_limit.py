"""Global rate limits in a real redis-server, shared by four proxy processes; failure modes."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.policies._helpers import (
    ECHO_UPSTREAM,
    GatewayProc,
    Upstream,
    free_port,
    request,
)
from tests.integration.policies._load import check_shared_limit

CONFIG = """apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge}
spec:
  listeners: [{name: web, port: $PORT, address: 127.0.0.1}]
  policies:
    - rateLimit:
        mode: global
        redis: {address: "127.0.0.1:REDIS", timeout: 200ms}
        limits: [{requests: 100, per: 1s}]
---
""" + ECHO_UPSTREAM + """---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: api}
spec:
  rules:
    - matches: [{path: {prefix: /down-open}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - rateLimit:
            mode: global
            redis: {address: "127.0.0.1:DEAD"}
            limits: [{requests: 1, per: 1h}]
    - matches: [{path: {prefix: /down-closed}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - rateLimit:
            mode: global
            failureMode: closed
            redis: {address: "127.0.0.1:DEAD"}
            limits: [{requests: 1, per: 1h}]
    - forward: {backends: [{upstream: echo}]}
"""
SECONDS = 6.0


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, redis_port: int
            ) -> Iterator[list[GatewayProc]]:
    config = (CONFIG.replace("UPSTREAM", str(upstream.port)).replace("REDIS", str(redis_port))
              .replace("DEAD", str(free_port())))
    root: Path = tmp_path_factory.mktemp("global")
    procs: list[GatewayProc] = []
    try:
        for i in range(4):
            procs.append(GatewayProc(root / f"proxy{i}", config, wait=False))
        for proc in procs:  # the four start together
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def test_four_proxies_share_one_global_limit(proxies: list[GatewayProc]) -> None:
    check_shared_limit([p.port for p in proxies], "/api", SECONDS, "4 proxies")


def test_redis_failure_modes(proxies: list[GatewayProc]) -> None:
    port = proxies[0].port
    assert [request(port, "GET", "/down-open")[0] for _ in range(3)] == [200] * 3
    assert request(port, "GET", "/down-closed")[0] == 503


def test_429_headers(proxies: list[GatewayProc]) -> None:
    """Past 100 requests in one second, the answer is a 429 with the limit's headers. The
    requests go eight at a time: one after the other, a slow minute of a shared machine
    fitted fewer than 101 in any one window (the limit never reached)."""
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: request(proxies[1].port, "GET", "/api"), range(150)))
    limited = [h for status, h, _ in answers if status == 429]
    assert limited, ("the limit was never reached", sorted({a[0] for a in answers}))
    headers = limited[0]
    assert headers["ratelimit-limit"] == "100"
    assert headers["ratelimit-remaining"] == "0"
    assert headers["retry-after"] == "1"
