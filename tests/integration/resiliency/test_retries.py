"""Retries: 5xx and listed statuses retried, per-try timeout moving to another endpoint, the
body replayed, the retry budget holding under an outage, a different endpoint per try; a try
abandoned while it waits for a connection (queued, or still opening) never sent later."""

from __future__ import annotations

import hashlib
import itertools
import socket
import struct
import threading
import time
from collections import Counter, defaultdict

import pytest

from tests.integration.resiliency.conftest import endpoints, events
from tests.support import resources as r
from tests.support.client import RawClient, roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import Response
from tests.support.load import concurrent
from tests.support.net import free_port, poll_until
from tests.support.tls import Pki, SlowHandshakeUpstream
from tests.support.upstream import RecordedRequest, Reply, ScriptedUpstream, pattern_body

BUDGET_N = 60
DEAD_PORT = free_port()  # nothing listens there: every connection to it is refused


def alternating(upstream: ScriptedUpstream, status: int):
    """Every other request (the 1st, 3rd ...) answers ``status``; the others are echoed."""
    counter = itertools.count()

    def handler(request: RecordedRequest) -> Reply:
        if next(counter) % 2 == 0:
            return Reply(status=status, headers=[("x-upstream", upstream.name)], body=b"no")
        return upstream.echo(request)
    return handler


def failing(name: str, status: int = 503, delay: float = 0.0):
    def handler(request: RecordedRequest) -> Reply:
        return Reply(status=status, headers=[("x-upstream", name)], body=b"down", delay=delay)
    return handler


@pytest.fixture(scope="module")
def ups(module_upstreams):
    names = ("flaky", "t429", "slow", "fast", "bad", "good", "rbad", "rgood", "b1", "b2",
             "cfgood", "qa", "qb")
    return {name: module_upstreams(name) for name in names}


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    u = ups

    def fwd(host: str, upstream: str, retries: dict) -> dict:
        return r.route(upstream, hostnames=[host],
                       rules=[r.rule(forward=r.forward(upstream, retries=retries))])

    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        fwd("flaky.test", "flaky", {"attempts": 2, "on": ["5xx"]}),
        fwd("429.test", "t429", {"attempts": 1, "on": ["connect-failure"], "statuses": [429]}),
        fwd("slow.test", "slowfirst", {"attempts": 1, "on": ["timeout"],
                                       "perTryTimeout": "200ms"}),
        fwd("body.test", "body", {"attempts": 2, "on": ["5xx"]}),
        fwd("other.test", "other", {"attempts": 1, "on": ["5xx"]}),
        fwd("budget.test", "budget", {
            "attempts": 1, "on": ["5xx"], "budget": {"percent": 20, "minConcurrency": 2},
            "backoff": {"baseInterval": "10ms", "maxInterval": "20ms"}}),
        r.upstream("flaky", u["flaky"].port),
        r.upstream("t429", u["t429"].port),
        r.upstream("slowfirst", u["slow"].port, u["fast"].port),
        r.upstream("body", u["bad"].port, u["good"].port),
        r.upstream("other", u["rbad"].port, u["rgood"].port, loadBalancer={"policy": "random"}),
        r.upstream("budget", u["b1"].port, u["b2"].port),
        fwd("cf.test", "cf", {"attempts": 1, "on": ["connect-failure"]}),
        r.upstream("cf", DEAD_PORT, u["cfgood"].port),
        r.route("hold", hostnames=["hold.test"], rules=[r.rule(forward=r.forward("queued"))]),
        fwd("queued.test", "queued", {"attempts": 1, "on": ["timeout"],
                                      "perTryTimeout": "400ms"}),
        r.upstream("queued", u["qa"].port, u["qb"].port,
                   loadBalancer={"policy": "ring_hash", "hashOn": {"header": "x-k"}},
                   connectionPool={"maxConnectionsPerEndpoint": 1}),
    ))


def test_flaky_upstream_becomes_all_successes(gw, ups, figure) -> None:
    flaky = ups["flaky"]
    flaky.handler = alternating(flaky, 503)
    n = 200
    statuses: Counter = Counter()
    with RawClient(gw.port) as client:
        for _ in range(n):
            client.request("GET", "/f", host="flaky.test")
            statuses[client.read_final().status] += 1
    retries = events(gw, "default/flaky", "retry")
    figure("flaky (every other 503): successes of 200", statuses[200])
    figure("flaky: retries in /metrics", retries)
    assert statuses == {200: n}, statuses
    assert retries == n  # each request's first try got the 503
    assert len(flaky.requests) == 2 * n


def test_listed_status_429_is_retried(gw, ups) -> None:
    t429 = ups["t429"]
    t429.handler = alternating(t429, 429)
    for _ in range(5):
        response = roundtrip(gw.port, "GET", "/r", host="429.test")
        assert response.status == 200, response
    assert [q.path for q in t429.requests] == ["/r"] * 10
    assert events(gw, "default/t429", "retry") == 5


def test_per_try_timeout_moves_to_another_endpoint(gw, ups, figure) -> None:
    ups["slow"].handler = failing("slow", 200, delay=1.0)
    times = []
    for _ in range(6):
        start = time.monotonic()
        response = roundtrip(gw.port, "GET", "/s", host="slow.test")
        times.append(time.monotonic() - start)
        assert response.status == 200 and response.header("x-upstream") == "fast", response
    assert len(ups["slow"].requests) >= 2, "the slow endpoint was never tried first"
    figure("per-try timeout 200ms: slowest client latency (s)", round(max(times), 3))
    assert max(times) < 0.6, times
    assert events(gw, "default/slowfirst", "timeout") >= 2


def test_body_is_replayed_on_retry(gw, ups) -> None:
    ups["bad"].handler = failing("bad")
    body = pattern_body(100_000)
    digest = hashlib.sha256(body).hexdigest()
    for i in range(4):
        response = roundtrip(gw.port, "POST", f"/upload/{i}", host="body.test", body=body)
        assert response.status == 200 and response.header("x-upstream") == "good", response
    tried = ups["bad"].requests + ups["good"].requests
    assert len(ups["bad"].requests) >= 2 and len(ups["good"].requests) == 4
    for request in tried:
        assert request.body_size == len(body) and request.body_sha256 == digest, request.target


def test_retry_goes_to_a_different_endpoint(gw, ups, figure) -> None:
    """Random balancing over a failing and a working endpoint: every retry of a try that
    failed on ``rbad`` must go to ``rgood`` (which endpoint served each try is recorded)."""
    ups["rbad"].handler = failing("rbad")
    n = 200  # ~100 retries: a 1-in-16 same-endpoint retry shows up almost surely
    statuses: Counter = Counter()
    for i in range(n):
        response = roundtrip(gw.port, "GET", "/o", {"x-req": str(i)}, host="other.test")
        statuses[response.status] += 1
    tries: dict[str, list[str]] = defaultdict(list)
    for name in ("rbad", "rgood"):
        for request in ups[name].requests:
            tries[request.header("x-req") or ""].append(name)
    retried = [t for t in tries.values() if "rbad" in t]
    moved = sum(1 for t in retried if "rgood" in t)
    figure("random LB, retries sent to the other endpoint", f"{moved}/{len(retried)}")
    figure("random LB, successes", f"{statuses[200]}/{n}")
    assert retried, "no try hit the failing endpoint"
    assert moved == len(retried), f"{len(retried) - moved} retries went to the same endpoint"
    assert statuses == {200: n}, statuses


def test_retry_budget_caps_retries_under_an_outage(gw, ups, figure) -> None:
    for name in ("b1", "b2"):
        ups[name].handler = failing(name, delay=0.3)
    results = concurrent(
        BUDGET_N, lambda: roundtrip(gw.port, "GET", "/b", host="budget.test", timeout=10))
    statuses = Counter(getattr(res, "status", type(res).__name__) for res, _ in results)
    retries = events(gw, "default/budget", "retry")
    denied = events(gw, "default/budget", "retry_budget_exhausted")
    tries = len(ups["b1"].requests) + len(ups["b2"].requests)
    figure("budget: concurrent requests", BUDGET_N)
    figure("budget: retries", retries)
    figure("budget: retries refused (retry_budget_exhausted)", denied)
    figure("budget: retries / requests", round(retries / BUDGET_N, 3))
    assert statuses == {503: BUDGET_N}, statuses
    assert tries == BUDGET_N + retries
    assert retries <= 0.20 * BUDGET_N + 2, retries
    assert denied >= BUDGET_N - retries - 2 and denied > 0


def test_connect_failures_a_retry_hides_are_counted(gw, ups) -> None:
    """Round robin over a refusing and a working endpoint, retried on connect-failure: the
    client sees only 200s, and /metrics still shows every refused connection (as it shows
    every per-try timeout), so an operator sees the dead endpoint."""
    n = 6
    for _ in range(n):
        response = roundtrip(gw.port, "GET", "/c", host="cf.test")
        assert response.status == 200, response
    retries = events(gw, "default/cf", "retry")
    assert retries >= n // 2 - 1  # round robin: about every other first try was refused
    assert events(gw, "default/cf", "connect_failure") == retries


def test_a_try_that_timed_out_in_the_pool_queue_is_not_sent_later(gw, ups) -> None:
    """One connection per endpoint; the endpoint a key hashes to is busy for 0.7 s, so the
    key's next request waits in that endpoint's queue, its per-try timeout (400 ms) fires
    there and the retry goes to the other endpoint. When the busy connection frees, the
    abandoned try must not take it: the request would be sent twice, and the connection
    (given back when the retry's answer ends) would carry a late answer to the next
    request."""
    qa, qb = ups["qa"], ups["qb"]
    delays = {"/hold": 0.7, "/r": 0.35}

    def answering(name: str):
        def handler(request: RecordedRequest) -> Reply:
            return Reply(headers=[("x-upstream", name), ("x-target", request.path)],
                         body=request.path.encode(), delay=delays.get(request.path, 0.0))
        return handler

    for up in (qa, qb):
        up.reset(answering(up.name))
    key = next(k for k in (f"k{i}" for i in range(64))
               if roundtrip(gw.port, "GET", "/probe", {"x-k": k},
                            host="hold.test").header("x-upstream") == "qa")
    for up in (qa, qb):
        up.reset(answering(up.name))
    held = threading.Thread(target=roundtrip, args=(gw.port, "GET", "/hold", {"x-k": key}),
                            kwargs={"host": "hold.test"})
    held.start()
    time.sleep(0.1)
    response = roundtrip(gw.port, "GET", "/r", {"x-k": key}, host="queued.test")
    held.join(5)
    assert response.status == 200 and response.header("x-upstream") == "qb", response
    time.sleep(0.6)  # past the moment the busy connection freed, and the late answer
    assert [q.path for q in qa.requests] == ["/hold"], "the abandoned try was sent"
    for i in range(3):  # each answer is the request's own
        answer = roundtrip(gw.port, "GET", f"/after/{i}", {"x-k": key}, host="hold.test")
        assert answer.status == 200 and answer.header("x-target") == f"/after/{i}", answer


STALLED_HANDSHAKE = 1.3  # seconds the upstream's first connection takes to open


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(("forward", "first_status"), [
    pytest.param({"retries": {"attempts": 1, "on": ["timeout"], "perTryTimeout": "1s"}}, 200,
                 id="per-try-timeout-then-retry"),
    pytest.param({"timeout": "1s"}, 504, id="route-timeout"),
    pytest.param({}, None, id="client-left"),
])
def test_a_try_abandoned_while_its_connection_opens_leaves_the_pool_whole(
        gateways, pki: Pki, forward: dict, first_status: int | None) -> None:
    """The endpoint's first connection takes 1.3 s to open (its TLS handshake is held). The
    try waiting for it ends before: a per-try timeout (the retry opens a second connection
    and is answered there, while the first is still opening), the route's timeout, or the
    client leaving. The connection, once open, joins the pool and carries nothing of the
    abandoned try: the request reaches the upstream once (the retry's), every later answer
    is its own request's, no more than maxConnectionsPerEndpoint (2) are opened and nothing
    stays counted as active. Before the pool forgot a try abandoned while connecting
    (a4beabe), the first connection was handed to the retried request when it opened: the
    request was sent a second time, and a third connection was opened later."""
    up = SlowHandshakeUpstream("slowtls", pki.issue("slowtls", "localhost"),
                               handshake_delays=[STALLED_HANDSHAKE]).start()
    try:
        delays = {"/first": 0.6, "/both/0": 0.3, "/both/1": 0.3}
        up.handler = lambda request: Reply(
            headers=[("x-target", request.path)], body=request.path.encode(),
            delay=delays.get(request.path, 0.0))
        gw = gateways(lambda port: r.dump(
            r.gateway(port),
            r.route("slow", rules=[r.rule(forward=r.forward("slowtls", **forward))]),
            r.upstream("slowtls", up.port, tls={"caFile": str(pki.ca_file), "sni": "localhost"},
                       connectionPool={"maxConnectionsPerEndpoint": 2})))
        with RawClient(gw.port) as client:
            client.request("GET", "/first")
            if first_status is None:
                time.sleep(0.5)  # then the client leaves (RST: a FIN would still wait)
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            else:
                first = client.read_final()
                assert first.status == first_status, first
                if first_status == 200:
                    assert first.header("x-target") == "/first", first
        # the held connection opened (and, in the per-try case, the retry's own), then a
        # margin in which an abandoned try handed that connection would reach the upstream
        poll_until(lambda: up.connections >= (2 if first_status == 200 else 1),
                   STALLED_HANDSHAKE + 5, message="the held connection opened")
        time.sleep(0.5)
        sent = [q.path for q in up.requests]
        assert sent == (["/first"] if first_status == 200 else []), "the abandoned try was sent"
        for i in range(3):
            answer = roundtrip(gw.port, "GET", f"/next/{i}")
            assert answer.status == 200 and answer.header("x-target") == f"/next/{i}", answer
        pending = iter(["/both/0", "/both/1"])  # two at once: both connections in use
        both = [a for a, _ in concurrent(2, lambda: roundtrip(gw.port, "GET", next(pending)))]
        targets = sorted(a.header("x-target") if isinstance(a, Response) else repr(a)
                         for a in both)
        assert targets == ["/both/0", "/both/1"], both
        # the held connection and one more, both kept: none lost, none over the limit
        assert up.connections == 2
        (endpoint,) = endpoints(gw, "default/slowtls").values()
        assert endpoint["active_requests"] == 0, endpoint
    finally:
        up.stop()
