"""Stale pooled connections and request bodies (issue #11 item 12).

The upstream here answers the first request of each connection and closes the connection,
unannounced, when a second request arrives on it: the gateway's pooled connection was stale.
Nothing was processed, so an idempotent request is sent again once on a new connection, its
body included (kept up to a bound); a non-idempotent one is not. On a route with retries, a
retry after a stale connection uses a new connection, not another pooled one.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.upstream import RecordedRequest, Reply, ScriptedUpstream


class OneRequestPerConnection:
    """The handler: a normal answer to a connection's first request, a silent close after."""

    def __init__(self, delay: float = 0.0) -> None:
        self.seen: set[int] = set()
        self.lock = threading.Lock()
        self.delay = delay

    def __call__(self, request: RecordedRequest) -> Reply:
        with self.lock:
            if request.conn_id in self.seen:
                return Reply(raw=b"")  # closes without answering
            self.seen.add(request.conn_id)
        return Reply(200, delay=self.delay, body=b"got %d bytes" % request.body_size)


@pytest.fixture
def env(gateways, upstreams) -> tuple[int, ScriptedUpstream]:
    app = upstreams("app")
    app.handler = OneRequestPerConnection()
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("main", rules=[
            r.rule({"prefix": "/retry"}, forward=r.forward(
                "app", retries={"attempts": 1, "on": ["reset"]})),
            r.rule(forward=r.forward("app")),
        ]),
        r.upstream("app", app.port),
    ))
    return gw.port, app


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_idempotent_request_with_body_is_replayed_on_a_new_connection(env, method: str) -> None:
    port, app = env
    body = b"x" * 5000
    for attempt in range(3):
        # two requests on one client connection are not needed: every request after the
        # first meets the pooled (stale) connection the first one left
        response = roundtrip(port, method, f"/item/{attempt}", body=body)
        assert response.status == 200, response
        assert response.body == b"got 5000 bytes"
    complete = [q for q in app.requests if q.body_size == 5000]
    assert len(complete) == 5  # 3 answered, the 2nd and 3rd first dropped on a stale one
    assert len({q.conn_id for q in app.requests}) == 3


def test_chunked_idempotent_body_is_replayed(env) -> None:
    port, app = env
    assert roundtrip(port, "PUT", "/warm", body=b"a").status == 200
    response = roundtrip(port, "PUT", "/chunked", headers={"transfer-encoding": "chunked"},
                         body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert response.status == 200, response
    assert app.last.body == b"hello world"


def test_non_idempotent_request_is_not_replayed(env) -> None:
    port, app = env
    assert roundtrip(port, "POST", "/warm", body=b"a").status == 200
    assert roundtrip(port, "POST", "/order", body=b"buy one").status == 502
    assert [q.path for q in app.requests].count("/order") == 1


def test_a_large_idempotent_body_is_not_kept(env) -> None:
    port, _ = env
    assert roundtrip(port, "PUT", "/warm", body=b"a").status == 200
    assert roundtrip(port, "PUT", "/big", body=b"x" * (100 * 1024)).status == 502


def test_retry_after_a_stale_connection_uses_a_new_one(env) -> None:
    """Several stale connections in the pool: a POST on a route with retries on reset
    (no free retry: not idempotent) would meet the next stale one on its retry."""
    port, app = env
    app.handler = OneRequestPerConnection(delay=0.3)
    with ThreadPoolExecutor(4) as pool:  # four connections opened at once, then pooled
        statuses = list(pool.map(lambda i: roundtrip(port, "GET", f"/retry/{i}").status,
                                 range(4)))
    assert statuses == [200] * 4
    app.handler.delay = 0.0
    response = roundtrip(port, "POST", "/retry/order", body=b"buy one")
    assert response.status == 200, response
    orders = [q for q in app.requests if q.path == "/retry/order"]
    assert len(orders) == 2  # the stale try and the retry on a new connection
