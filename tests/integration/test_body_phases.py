"""The body phases of the filter API through a real gateway process and a scripted upstream
that records exactly what it received: whole bodies (a cap, 413 / 502 above it), streamed
chunk replacement, re-framing when a filter may change a body's length, bodies that must not
be touched (HEAD, 204, 304), trailers beside body filters, inspect-only filters.

The filters are the test-only plugins of ``tests/plugins`` (real entry points, installed into
the test environment by ``scripts/_venv.sh``): ``testRequestBody`` / ``testResponseBody``
replace ``find`` with ``replace`` and add ``append`` at the end of the body, streamed or
whole (``wholeBody`` cap); ``testBodyTally`` only looks, and adds a trailer with the response
body's size.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import pytest

from tests.support import resources as r
from tests.support.client import ConnectionClosed, RawClient, roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import chunked
from tests.support.net import poll_until
from tests.support.upstream import Reply, ScriptedUpstream, pattern_body

HOST = "body.test"
CAP = 64


def body_plugin(name: str, **config: Any) -> list[dict[str, Any]]:
    return [{"plugins": [{"name": name, "config": config}]}]


REWRITE = {"find": "a", "replace": "AA", "append": "!"}
ROUTES = {
    "/req-whole": body_plugin("testRequestBody", wholeBody=CAP, **REWRITE),
    "/req-stream": body_plugin("testRequestBody", **REWRITE),
    "/req-refuse": body_plugin("testRequestBody", refuse="STOP"),
    "/resp-whole": body_plugin("testResponseBody", wholeBody=CAP, **REWRITE),
    "/resp-stream": body_plugin("testResponseBody", **REWRITE),
    "/tally": body_plugin("testBodyTally"),
    "/auth-whole": [{"apiKey": {}, "plugins": [
        {"name": "testRequestBody", "config": {"wholeBody": CAP}}]}],
    "/plain": [],
}


def rewritten(body: bytes) -> bytes:
    return body.replace(b"a", b"AA") + b"!"


@pytest.fixture(scope="module")
def shared_upstream(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("body")


@pytest.fixture(scope="module")
def gw(module_gateways, shared_upstream: ScriptedUpstream) -> Gateway:
    rules = [r.rule({"prefix": path}, forward=r.forward("up"), **(
        {"policies": policies} if policies else {})) for path, policies in ROUTES.items()]
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("body", hostnames=[HOST], rules=rules),
        r.upstream("up", shared_upstream.port),
    ))


@pytest.fixture
def up(shared_upstream: ScriptedUpstream, gw: Gateway) -> ScriptedUpstream:
    shared_upstream.reset()
    return shared_upstream


def request(gw: Gateway, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None, **options: Any) -> Any:
    return roundtrip(gw.port, method, path, headers, body, host=HOST, **options)


# -- request bodies --------------------------------------------------------------------------
@pytest.mark.parametrize("client_framing", ["length", "chunked"])
def test_a_whole_request_body_goes_up_with_its_new_length(gw: Gateway, up: ScriptedUpstream,
                                                          client_framing: str) -> None:
    body = b"banana split"
    if client_framing == "chunked":
        response = request(gw, "POST", "/req-whole", chunked(b"banana", b" split"),
                           {"transfer-encoding": "chunked"})
    else:
        response = request(gw, "POST", "/req-whole", body)
    assert response.status == 200, response
    received = up.last
    assert received.framing == "length"
    assert received.body == rewritten(body) == b"bAAnAAnAA split!"
    assert received.header("content-length") == str(len(rewritten(body)))
    assert received.header("transfer-encoding") is None


@pytest.mark.parametrize("path", ["/req-whole", "/req-stream", "/tally"])
def test_request_trailers_are_passed_on_beside_a_body_filter(gw: Gateway, up: ScriptedUpstream,
                                                             path: str) -> None:
    """A whole body that came with trailers stays chunked (a length cannot carry them)."""
    response = request(gw, "POST", path, chunked(b"ban", b"ana", trailers=[("x-sum", "s1")]),
                       {"transfer-encoding": "chunked"})
    assert response.status == 200, response
    received = up.last
    assert received.framing == "chunked"
    assert received.trailers == [("x-sum", "s1")]
    assert received.body == (b"banana" if path == "/tally" else rewritten(b"banana"))


def test_a_whole_request_body_with_transfer_codings_stays_chunked(gw: Gateway,
                                                                  up: ScriptedUpstream) -> None:
    """The filter saw coded bytes: their count is not the body's length, and the upstream
    must still be told how to decode them."""
    response = request(gw, "POST", "/req-whole", chunked(b"coded"),
                       {"transfer-encoding": "gzip, chunked"})
    assert response.status == 200, response
    received = up.last
    assert received.header("transfer-encoding") == "gzip, chunked"
    assert received.header("content-length") is None
    assert received.body == b"coded!"


def test_a_request_body_over_the_cap_is_413_before_the_upstream(gw: Gateway,
                                                                up: ScriptedUpstream) -> None:
    assert request(gw, "POST", "/req-whole", b"x" * (CAP + 1)).status == 413
    with RawClient(gw.port) as client:  # chunked: found while reading, then the end
        client.request("POST", "/req-whole", {"transfer-encoding": "chunked"},
                       chunked(b"x" * 40, b"y" * 40), host=HOST)
        response = client.read_final("POST")
        assert response.status == 413
        assert client.closed_by_peer()
    assert request(gw, "POST", "/req-whole", b"x" * CAP).status == 200  # the cap itself: ok
    assert [req.body for req in up.requests] == [b"x" * CAP + b"!"]


def test_a_declared_length_over_the_cap_is_refused_before_the_body(gw: Gateway,
                                                                   up: ScriptedUpstream) -> None:
    """A client that waits for 100 Continue gets the 413 instead, and sends nothing."""
    with RawClient(gw.port) as client:
        client.request("POST", "/req-whole", {"content-length": str(CAP + 1),
                                              "expect": "100-continue"}, host=HOST)
        response = client.read_response("POST")
        assert response.status == 413
        assert client.closed_by_peer()
    with RawClient(gw.port) as client:  # within the cap: 100 Continue, then the answer
        client.request("POST", "/req-whole", {"content-length": "3",
                                              "expect": "100-continue"}, host=HOST)
        assert client.read_response("POST").status == 100
        client.send(b"abc")
        assert client.read_final("POST").status == 200
    assert [req.body for req in up.requests] == [b"AAbc!"]


def test_a_chunked_request_over_the_cap_gets_one_answer(gw: Gateway, up: ScriptedUpstream
                                                        ) -> None:
    """The rest of a body after the 413 is not answered again."""
    with RawClient(gw.port) as client:
        client.request("POST", "/req-whole", {"transfer-encoding": "chunked"},
                       b"".join(b"%x\r\n%s\r\n" % (30, b"z" * 30) for _ in range(20)),
                       host=HOST)
        assert client.read_final("POST").status == 413
        client.send(b"0\r\n\r\n")
        assert client.closed_by_peer()
        assert client.buf == b""  # nothing after the one answer
    assert up.requests == []


def logged_once(gw: Gateway, path: str) -> dict[str, Any]:
    """The one access log line of the request to ``path`` (ended once, not twice)."""
    gw.wait_access_log(1)
    poll_until(lambda: [line for line in gw.access_log() if line["path"] == path], 5.0,
               message=f"the access log line of {path}")
    time.sleep(0.3)  # a second end of the same request would be logged by now
    lines = [line for line in gw.access_log() if line["path"] == path]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(("path", "pieces", "status"), [
    pytest.param("/req-whole", [b"z" * 30] * 20, 413, id="over-the-cap"),
    pytest.param("/req-refuse", [b"STOP"] * 3, 403, id="refused-twice"),
    pytest.param("/auth-whole", [b"z" * 30] * 20, 401, id="answered-before-the-body"),
])
def test_the_rest_of_a_stopped_body_ends_nothing_again(gw: Gateway, up: ScriptedUpstream,
                                                       path: str, pieces: list[bytes],
                                                       status: int) -> None:
    """Body pieces read in the same turn as the one that stopped the request (or after a
    local answer) reach no filter, send nothing and end no request a second time."""
    path = f"{path}/{uuid.uuid4().hex}"
    with RawClient(gw.port) as client:
        client.request("POST", path, {"transfer-encoding": "chunked"}, chunked(*pieces),
                       host=HOST)
        response = client.read_final("POST")
        assert response.status == status
        assert client.closed_by_peer()
        assert client.buf == b""
    assert logged_once(gw, path)["status"] == status
    assert up.requests == []


@pytest.mark.parametrize("client_framing", ["length", "chunked"])
def test_a_streamed_request_body_goes_up_chunked(gw: Gateway, up: ScriptedUpstream,
                                                 client_framing: str) -> None:
    """A filter that may change lengths: the declared Content-Length cannot stay."""
    body = pattern_body(300_000) + b"a banana"
    if client_framing == "chunked":
        pieces = [body[i:i + 70_000] for i in range(0, len(body), 70_000)]
        response = request(gw, "POST", "/req-stream", chunked(*pieces),
                           {"transfer-encoding": "chunked"})
    else:
        response = request(gw, "POST", "/req-stream", body)
    assert response.status == 200, response
    received = up.last
    assert received.framing == "chunked"
    assert received.header("content-length") is None
    expected = rewritten(body)
    assert (received.body_size, received.body_sha256) == (
        len(expected), hashlib.sha256(expected).hexdigest())


def test_a_request_body_filter_may_refuse_mid_body(gw: Gateway, up: ScriptedUpstream) -> None:
    with RawClient(gw.port) as client:
        client.request("POST", "/req-refuse", {"transfer-encoding": "chunked"},
                       b"5\r\nhello\r\n", host=HOST)
        up.wait_for_requests(0)
        time.sleep(0.1)  # the first piece is on its way upstream
        client.send(b"4\r\nSTOP\r\n")
        response = client.read_final("POST")
        assert (response.status, response.body) == (403, b"refused by testRequestBody\n")
        assert client.closed_by_peer()


def test_an_inspect_only_request_filter_keeps_the_framing(gw: Gateway, up: ScriptedUpstream
                                                          ) -> None:
    body = pattern_body(100_000)
    assert request(gw, "PUT", "/tally", body).status == 200
    received = up.last
    assert received.framing == "length"
    assert received.header("content-length") == str(len(body))
    assert received.body_sha256 == hashlib.sha256(body).hexdigest()


# -- response bodies -------------------------------------------------------------------------
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_whole_response_body_is_sent_with_its_new_length(gw: Gateway, up: ScriptedUpstream,
                                                           framing: str) -> None:
    up.reply(Reply(body=b"a papaya", framing=framing))
    response = request(gw, "GET", "/resp-whole")
    assert (response.status, response.body) == (200, b"AA pAApAAyAA!")
    assert response.framing == "length"
    assert response.header("content-length") == "13"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_response_body_over_the_cap_is_502(gw: Gateway, up: ScriptedUpstream,
                                             framing: str) -> None:
    up.reply(Reply(body=b"x" * (CAP + 1), framing=framing))
    response = request(gw, "GET", "/resp-whole")
    assert response.status == 502
    assert b"x" not in response.body  # nothing of the upstream's body went out
    up.reply(Reply(body=b"x" * CAP, framing=framing))
    assert request(gw, "GET", "/resp-whole").body == b"x" * CAP + b"!"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_streamed_chunk_replacement_is_reframed(gw: Gateway, up: ScriptedUpstream,
                                                framing: str) -> None:
    """A length change on a streamed body: chunked to the client whatever the upstream sent
    (its Content-Length would be wrong)."""
    body = pattern_body(500_000) + b"banana"
    up.reply(Reply(body=body, framing=framing))
    response = request(gw, "GET", "/resp-stream")
    assert response.status == 200
    assert response.framing == "chunked"
    assert response.header("content-length") is None
    assert response.body == rewritten(body)


def test_a_streamed_body_to_an_http10_client_is_closed_at_its_end(gw: Gateway,
                                                                  up: ScriptedUpstream) -> None:
    up.reply(Reply(body=b"banana"))
    with RawClient(gw.port) as client:
        client.request("GET", "/resp-stream", host=HOST, version="HTTP/1.0")
        response = client.read_final()
        assert (response.framing, response.body) == ("close", b"bAAnAAnAA!")


@pytest.mark.parametrize("path", ["/resp-whole", "/resp-stream"])
@pytest.mark.parametrize(("method", "status"), [
    pytest.param("HEAD", 200, id="HEAD"),
    pytest.param("GET", 204, id="204"),
    pytest.param("GET", 304, id="304"),
])
def test_answers_without_a_body_are_untouched(gw: Gateway, up: ScriptedUpstream, path: str,
                                              method: str, status: int) -> None:
    """No body phase for them: the filter would otherwise add its "!". A second request on
    the connection shows that its framing stayed right."""
    headers = [("etag", '"v1"')]
    if status == 200:  # HEAD: the length the GET would have
        up.reply(Reply(status=status, headers=headers, body=b"a" * 10))
    else:
        up.reply(Reply(status=status, headers=headers, framing="none"))
    with RawClient(gw.port) as client:
        client.request(method, path, host=HOST)
        response = client.read_final(method)
        up.reply(Reply(body=b"after"))
        client.request("GET", path, host=HOST)
        assert client.read_final().body == rewritten(b"after")
    assert (response.status, response.body) == (status, b"")
    assert response.header("etag") == '"v1"'
    assert response.header("transfer-encoding") is None
    assert response.header("content-length") == ("10" if method == "HEAD" else None)


@pytest.mark.parametrize("path", ["/resp-stream", "/resp-whole", "/tally"])
def test_trailers_are_passed_on_beside_a_body_filter(gw: Gateway, up: ScriptedUpstream,
                                                     path: str) -> None:
    up.reply(Reply(body=b"banana", framing="chunked", trailers=[("x-checksum", "c1")]))
    response = request(gw, "GET", path)
    assert response.status == 200
    assert response.framing == "chunked"
    assert ("x-checksum", "c1") in response.trailers
    if path == "/tally":
        assert response.body == b"banana"
        assert response.trailers == [("x-checksum", "c1"), ("x-body-bytes", "6")]
    else:
        assert response.body == b"bAAnAAnAA!"


def test_an_inspect_only_response_filter_keeps_the_length_and_copies_nothing(
        gw: Gateway, up: ScriptedUpstream) -> None:
    body = pattern_body(300_000)
    up.reply(Reply(body=body))
    response = request(gw, "GET", "/tally")
    assert response.framing == "length"
    assert response.header("content-length") == str(len(body))
    assert response.body == body


@pytest.mark.parametrize("path", ["/resp-whole", "/resp-stream"])
def test_a_body_delimited_by_closing_is_rewritten_to_its_end(gw: Gateway, up: ScriptedUpstream,
                                                             path: str) -> None:
    up.reply(Reply(body=b"banana", framing="close"))
    response = request(gw, "GET", path)
    assert (response.status, response.body) == (200, b"bAAnAAnAA!")


def test_a_truncated_body_is_never_completed_by_a_filter(gw: Gateway, up: ScriptedUpstream
                                                         ) -> None:
    """The upstream closes before its Content-Length: a whole-body route has sent nothing and
    answers 502; a streamed one cuts the client off (no last chunk, no "!")."""
    up.reply(Reply(body=b"a" * 40, truncate=10))
    assert request(gw, "GET", "/resp-whole").status == 502
    with RawClient(gw.port) as client:
        client.request("GET", "/resp-stream", host=HOST)
        with pytest.raises(ConnectionClosed) as closed:
            client.read_final()
        assert b"!" not in closed.value.partial
