"""Timeouts: the route's whole-exchange timeout (late head: 504; late body: cut), ``0s``
turning it off, and a per-try timeout answering 504 when no retry is allowed."""

from __future__ import annotations

import time

import pytest

from tests.integration.resiliency.conftest import events
from tests.support import resources as r
from tests.support.client import ConnectionClosed, RawClient, roundtrip
from tests.support.gateway import Gateway
from tests.support.slow_body import SlowBodyUpstream
from tests.support.upstream import Reply


@pytest.fixture(scope="module")
def ups(module_upstreams):
    late = module_upstreams("late")
    late.reply(Reply(delay=1.0, headers=[("x-upstream", "late")], body=b"late"))
    trickle = SlowBodyUpstream("trickle", piece_size=100, piece_gap=0.1).start()
    trickle.reply(Reply(body_size=1500))  # 15 pieces over ~1.5 s
    yield {"late": late, "trickle": trickle}
    trickle.stop()


@pytest.fixture(scope="module")
def gw(module_gateways, ups) -> Gateway:
    late, trickle = ups["late"], ups["trickle"]
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("head", hostnames=["head.test"],
                rules=[r.rule(forward=r.forward("late", timeout="300ms"))]),
        r.route("body", hostnames=["body.test"],
                rules=[r.rule(forward=r.forward("trickle", timeout="500ms"))]),
        r.route("try", hostnames=["try.test"], rules=[r.rule(forward=r.forward(
            "late2", retries={"attempts": 1, "on": ["connect-failure"],
                              "perTryTimeout": "200ms"}))]),
        r.upstream("late", late.port),
        r.upstream("late2", late.port),
        r.upstream("trickle", trickle.port),
    ))


def test_late_head_gets_504(gw, figure) -> None:
    start = time.monotonic()
    response = roundtrip(gw.port, "GET", "/h", host="head.test")
    took = time.monotonic() - start
    figure("timeout 300ms, head after 1s: 504 after (s)", round(took, 3))
    assert response.status == 504, response
    assert 0.25 <= took < 0.8, took
    assert events(gw, "default/late", "timeout") >= 1


def test_slow_body_is_cut_at_the_deadline(gw, ups, figure) -> None:
    start = time.monotonic()
    with RawClient(gw.port) as client:
        client.request("GET", "/b", host="body.test")
        with pytest.raises(ConnectionClosed) as cut:
            client.read_final()
    took = time.monotonic() - start
    figure("timeout 500ms, body over 1.5s: cut after (s)", round(took, 3))
    figure("bytes the client got before the cut", len(cut.value.partial))
    assert 0 < len(cut.value.partial) < 1500, "the head came, then only part of the body"
    assert 0.4 <= took < 1.2, took


def test_per_try_timeout_without_retry_gets_504(gw, figure) -> None:
    start = time.monotonic()
    response = roundtrip(gw.port, "GET", "/t", host="try.test")
    took = time.monotonic() - start
    figure("perTryTimeout 200ms, no retry on timeout: 504 after (s)", round(took, 3))
    assert response.status == 504, response
    assert 0.15 <= took < 0.6, took


def test_zero_timeout_disables_the_deadline(gateways, upstreams) -> None:
    late = upstreams("late")
    late.reply(Reply(delay=1.2, body=b"finally"))
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("off", rules=[r.rule(forward=r.forward("late", timeout="0s"))]),
        r.upstream("late", late.port),
    ))
    response = roundtrip(gw.port, "GET", "/z", timeout=5)
    assert response.status == 200 and response.body == b"finally", response
