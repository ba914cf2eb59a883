"""A global rate limit whose Redis is unreachable answers within its ``redis.timeout``.

Three ways Redis can be gone, each behind its own pair of routes (``failureMode: open`` and
``closed``, ``timeout: 100ms``): a real redis-server that answered, then hung (SIGSTOP: its
kernel still accepts connections, nothing answers) and later killed; a socket that accepts
connections and never reads them; a port where nothing listens. The policy's timeout bounds
the whole check: a request is answered by the failure mode well under a second (before the
fix redis-py's default retries with backoff made it 3-5 s), both on the first failed checks
and on the next ones, a second later. One slow answer fails only its own check: the next
one asks Redis again (a Redis failing three checks in a row is skipped between probes).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.policies._helpers import (
    EDGE_AND_ECHO,
    GatewayProc,
    RedisServer,
    Upstream,
    free_port,
    poll_until,
    request,
)

TIMEOUT = 0.1  # the policies' redis.timeout
BOUND = 1.0  # generous: timeout + gateway + loaded CI machine; it was 3-5 s
SKIP_WINDOW = 1.0  # Skipping.SKIP_SECONDS: a Redis failing checks in a row is not asked

RULE = """    - matches: [{path: {prefix: /NAME-MODE}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - rateLimit:
            mode: global
            failureMode: MODE
            redis: {address: "127.0.0.1:PORT", timeout: 100ms}
            limits: [{requests: 1, per: 1h, key: ["header:x-client"]}]
"""


def route(targets: dict[str, int]) -> str:
    rules = "".join(RULE.replace("NAME", name).replace("MODE", mode).replace("PORT", str(port))
                    for name, port in targets.items() for mode in ("open", "closed"))
    return ("apiVersion: propylon.dev/v1\nkind: Route\nmetadata: {name: api}\nspec:\n"
            "  rules:\n" + rules + "    - forward: {backends: [{upstream: echo}]}\n")


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
           ) -> Iterator[dict[str, object]]:
    root: Path = tmp_path_factory.mktemp("redis-outage")
    redis = RedisServer(root)
    hole = socket.socket()  # accepts (the kernel's backlog), never reads nor answers
    hole.bind(("127.0.0.1", 0))
    hole.listen(128)
    targets = {"hung": redis.port, "hole": hole.getsockname()[1], "refused": free_port()}
    config = (EDGE_AND_ECHO + route(targets)).replace("UPSTREAM", str(upstream.port))
    gw = GatewayProc(root / "gw", config)
    try:
        yield {"gw": gw, "redis": redis}
    finally:
        gw.stop()
        redis.stop()
        hole.close()


def timed(port: int, path: str, client: str) -> tuple[int, float]:
    start = time.monotonic()
    status = request(port, "GET", path, {"x-client": client}, timeout=30)[0]
    return status, time.monotonic() - start


def check_failure_modes(port: int, name: str, client: str) -> None:
    """Redis ``name`` is unreachable and was not known to be: open lets through, closed
    answers 503, each within BOUND; the same again a window later (new checks, or answers
    at once while Redis is skipped)."""
    answers = [timed(port, f"/{name}-open", client), timed(port, f"/{name}-closed", client)]
    time.sleep(SKIP_WINDOW + 0.1)
    answers += [timed(port, f"/{name}-closed", client), timed(port, f"/{name}-open", client)]
    print(f"\n{name}: " + ", ".join(f"{s} in {t * 1000:.0f} ms" for s, t in answers))
    assert [s for s, _ in answers] == [200, 503, 503, 200], answers
    assert max(t for _, t in answers) < BOUND, answers


@pytest.mark.parametrize("name", ["hole", "refused"])
def test_unreachable_redis_answers_within_the_timeout(outage: dict[str, object],
                                                      name: str) -> None:
    gw = outage["gw"]
    assert isinstance(gw, GatewayProc)
    check_failure_modes(gw.port, name, f"{name}-client")


def test_hung_then_killed_redis_answers_within_the_timeout(outage: dict[str, object]) -> None:
    gw, redis = outage["gw"], outage["redis"]
    assert isinstance(gw, GatewayProc) and isinstance(redis, RedisServer)
    port = gw.port
    # Redis answers: the 1/h limit lets the first request through and refuses the second
    for mode in ("open", "closed"):
        assert [timed(port, f"/hung-{mode}", "c1")[0] for _ in range(2)] == [200, 429]

    redis.pause()
    try:
        check_failure_modes(port, "hung", "c1")  # open: 200 where Redis would say 429
    finally:
        redis.resume()
    poll_until(lambda: timed(port, "/hung-closed", "c1")[0] == 429, timeout=5, interval=0.1)
    assert timed(port, "/hung-open", "c1")[0] == 429  # Redis decides again

    redis.stop()  # pooled connections now meet a closed socket, new ones are refused
    time.sleep(SKIP_WINDOW + 0.1)  # no failure remembered from the pause
    check_failure_modes(port, "hung", "c1")


def test_closed_answer_says_when_to_retry(tmp_path: Path, upstream: Upstream) -> None:
    """``failureMode: closed`` with its redis-server stopped: the 503 says ``Retry-After``,
    the time a failing Redis is skipped (a client retrying then meets Redis asked again), on
    each failed check."""
    redis = RedisServer(tmp_path)
    try:
        config = (EDGE_AND_ECHO + route({"stopped": redis.port})).replace(
            "UPSTREAM", str(upstream.port))
        gw = GatewayProc(tmp_path / "gw", config)
        try:
            assert timed(gw.port, "/stopped-closed", "c1")[0] == 200  # Redis answers
            redis.stop()
            answers = [request(gw.port, "GET", "/stopped-closed", {"x-client": "c2"})
                       for _ in range(2)]
        finally:
            gw.stop()
    finally:
        redis.stop()
    assert [(status, headers.get("retry-after")) for status, headers, _ in answers] == [
        (503, str(int(SKIP_WINDOW)))] * 2


def test_one_slow_answer_fails_only_its_check(tmp_path: Path, upstream: Upstream) -> None:
    """A redis-server that misses one check's deadline (SIGSTOPped for it), then answers
    again: that check gets the failure mode, the next ones are Redis's decisions, at once
    (one failure used to put the store down for a second: a second of 503s for every client
    with ``failureMode: closed``)."""
    redis = RedisServer(tmp_path)
    try:
        config = (EDGE_AND_ECHO + route({"slow": redis.port})).replace(
            "UPSTREAM", str(upstream.port))
        gw = GatewayProc(tmp_path / "gw", config)
        try:
            assert timed(gw.port, "/slow-closed", "c1")[0] == 200  # c1 spends its 1/h
            redis.pause()
            try:
                stalled = timed(gw.port, "/slow-closed", "c2")[0]
            finally:
                redis.resume()
            after = [timed(gw.port, "/slow-closed", client)[0] for client in ("c1", "c3")]
        finally:
            gw.stop()
    finally:
        redis.stop()
    assert (stalled, after) == (503, [429, 200])
