"""x-request-id: made for every request, kept only from trusted proxies, sent upstream,
returned to the client (gateway-made answers included) and written to the access log."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway
from tests.support.upstream import Reply, ScriptedUpstream, echo_reply

GENERATED = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HOST = "rid.test"


@pytest.fixture(scope="module")
def up(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("rid")


def config(up: ScriptedUpstream, **gateway_spec: Any) -> Callable[[int], str]:
    return lambda port: r.dump(
        r.gateway(port, **gateway_spec),
        r.route("main", hostnames=[HOST], rules=[
            r.rule({"prefix": "/api"}, name="api", forward=r.forward("rid")),
        ]),
        r.upstream("rid", up.port),
    )


@pytest.fixture(scope="module")
def untrusting(module_gateways, up) -> Gateway:
    return module_gateways(config(up))


@pytest.fixture(scope="module")
def trusting(module_gateways, up) -> Gateway:
    return module_gateways(config(up, trustedProxies=["127.0.0.0/8"]))


def _one_id(values: list[str]) -> str:
    assert len(values) == 1, values
    return values[0]


def _logged(gw: Gateway, request_id: str) -> dict[str, Any]:
    lines = gw.wait_access_log(1)
    found = [line for line in lines if line.get("request_id") == request_id]
    if not found:
        lines = gw.wait_access_log(len(lines) + 1)
        found = [line for line in lines if line.get("request_id") == request_id]
    assert found, f"{request_id} not in the access log"
    return found[0]


def test_an_id_is_made_sent_upstream_returned_and_logged(untrusting, up) -> None:
    up.reset()
    response = roundtrip(untrusting.port, "GET", "/api/a", host=HOST)
    assert response.status == 200
    returned = _one_id(response.header_all("x-request-id"))
    assert GENERATED.match(returned)
    assert _one_id(up.last.head.get_all("x-request-id")) == returned
    assert _logged(untrusting, returned)["path"] == "/api/a"


def test_ids_differ_between_requests(untrusting) -> None:
    ids = {_one_id(roundtrip(untrusting.port, "GET", "/api/n", host=HOST)
                   .header_all("x-request-id")) for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize("claimed", [pytest.param("client-chosen-id", id="plain"),
                                     pytest.param("x" * 300, id="too-long")])
def test_an_untrusted_clients_id_is_replaced(untrusting, up, claimed) -> None:
    up.reset()
    response = roundtrip(untrusting.port, "GET", "/api/b", {"x-request-id": claimed},
                         host=HOST)
    returned = _one_id(response.header_all("x-request-id"))
    assert returned != claimed and GENERATED.match(returned)
    assert up.last.head.get_all("x-request-id") == [returned]


def test_a_trusted_proxys_id_is_kept(trusting, up) -> None:
    up.reset()
    response = roundtrip(trusting.port, "GET", "/api/c", {"x-request-id": "edge-1234"},
                         host=HOST)
    assert response.header_all("x-request-id") == ["edge-1234"]
    assert up.last.head.get_all("x-request-id") == ["edge-1234"]
    assert _logged(trusting, "edge-1234")["status"] == 200


@pytest.mark.parametrize("claimed", [pytest.param("has space", id="space"),
                                     pytest.param("y" * 201, id="too-long")])
def test_a_trusted_proxys_unusable_id_is_replaced(trusting, up, claimed) -> None:
    up.reset()
    response = roundtrip(trusting.port, "GET", "/api/d", {"x-request-id": claimed}, host=HOST)
    returned = _one_id(response.header_all("x-request-id"))
    assert GENERATED.match(returned)
    assert up.last.head.get_all("x-request-id") == [returned]


@pytest.mark.parametrize(("target", "host", "status"), [
    pytest.param("/nothing-here", HOST, 404, id="no-route"),
    pytest.param("/api/x", "other.test", 404, id="other-host"),
])
def test_gateway_made_answers_carry_the_id(untrusting, target, host, status) -> None:
    response = roundtrip(untrusting.port, "GET", target, host=host)
    assert response.status == status
    returned = _one_id(response.header_all("x-request-id"))
    assert _logged(untrusting, returned)["status"] == status


def test_an_upstream_echoing_the_id_does_not_duplicate_it(untrusting, up) -> None:
    def echo_with_id(request: Any) -> Reply:
        reply = echo_reply(request)
        reply.headers.append(("x-request-id", request.header("x-request-id") or "none"))
        reply.headers.append(("x-request-id", "upstream-own"))
        return reply

    up.reset(echo_with_id)
    try:
        response = roundtrip(untrusting.port, "GET", "/api/e", host=HOST)
    finally:
        up.reset()
    returned = _one_id(response.header_all("x-request-id"))
    assert GENERATED.match(returned)
