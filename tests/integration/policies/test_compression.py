"""The ``compression`` policy through a real gateway process and a scripted upstream: codings
negotiated from Accept-Encoding (q-values, ``*``, identity), decoded by Python's gzip, brotli
and zstandard and by ``curl --compressed``; length-framed and chunked upstreams; what is never
compressed (small, other media types, already encoded, 206, no-transform, HEAD, 204, 304);
ETag and Vary; a stream of server-sent events that still streams."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import time
import zlib
from typing import Any

import brotli  # type: ignore[import-untyped]
import pytest
import zstandard

from tests.support import resources as r
from tests.support.client import RawClient, roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import Response, parse_chunk_size, parse_head
from tests.support.slow_body import SlowBodyUpstream
from tests.support.upstream import RecordedRequest, Reply, ScriptedUpstream

HOST = "zip.test"
JSON_BODY = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]}
                        for i in range(400)]).encode()
SMALL = b'{"ok": true}'
MIN_BYTES = 256


def decode(coding: str | None, body: bytes) -> bytes:
    if coding is None:
        return body
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "br":
        return bytes(brotli.decompress(body))
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    raise AssertionError(coding)


def reply_for(request: RecordedRequest) -> Reply:
    path = request.path
    json_type = ("content-type", "application/json; charset=utf-8")
    framing = "chunked" if "chunked" in request.target else "length"
    if path == "/json":
        return Reply(headers=[json_type, ("etag", '"v1"'), ("accept-ranges", "bytes")],
                     body=JSON_BODY, framing=framing)
    if path == "/small":
        return Reply(headers=[json_type], body=SMALL, framing=framing)
    if path == "/png":
        return Reply(headers=[("content-type", "image/png")], body=JSON_BODY)
    if path == "/identity":  # RFC 9110 §8.4.1: identity is never listed, yet some send it
        return Reply(headers=[json_type, ("content-encoding", "identity"),
                              ("content-encoding", "")], body=JSON_BODY)
    if path == "/encoded":
        return Reply(headers=[json_type, ("content-encoding", "gzip")],
                     body=gzip.compress(JSON_BODY))
    if path == "/partial":
        return Reply(206, [json_type, ("content-range", f"bytes 0-99/{len(JSON_BODY)}")],
                     JSON_BODY[:100])
    if path == "/no-transform":
        return Reply(headers=[json_type, ("cache-control", "public, no-transform")],
                     body=JSON_BODY)
    if path == "/empty":
        return Reply(204, [json_type])
    if path == "/not-modified":
        return Reply(304, [json_type, ("etag", '"v1"')])
    if path == "/big":
        return Reply(headers=[("content-type", "text/plain")], body_size=3 << 20,
                     framing=framing)
    return Reply(404)


@pytest.fixture(scope="module")
def shared_upstream(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("zip")


@pytest.fixture(scope="module")
def sse_upstream() -> Any:
    up = SlowBodyUpstream("sse", piece_size=len(b"data: tick 0\n\n"), piece_gap=0.4).start()
    up.reply(Reply(headers=[("content-type", "text/event-stream")],
                   body=b"".join(b"data: tick %d\n\n" % i for i in range(4)), framing="chunked"))
    yield up
    up.stop()


@pytest.fixture(scope="module")
def gw(module_gateways, shared_upstream: ScriptedUpstream, sse_upstream: Any) -> Gateway:
    compression = {"compression": {"minBytes": MIN_BYTES}}
    sse = {"compression": {"minBytes": 0, "contentTypes": ["text/event-stream"]}}
    gzip_only = {"compression": {"algorithms": ["gzip"], "contentTypes": ["application/*"]}}
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("zip", hostnames=[HOST], rules=[
            r.rule({"prefix": "/events"}, forward=r.forward("sse"), policies=[sse]),
            r.rule({"prefix": "/gzip-only/"}, policies=[gzip_only],
                   forward=r.forward("up", rewrite={"prefix": "/"})),
            r.rule({"prefix": "/"}, forward=r.forward("up"), policies=[compression]),
        ]),
        r.upstream("up", shared_upstream.port),
        r.upstream("sse", sse_upstream.port),
    ))


@pytest.fixture
def up(shared_upstream: ScriptedUpstream, gw: Gateway) -> ScriptedUpstream:
    shared_upstream.reset(reply_for)
    return shared_upstream


def get(gw: Gateway, path: str, accept: str | None = "gzip, br, zstd", method: str = "GET",
        **headers: str) -> Response:
    fields = dict(headers)
    if accept is not None:
        fields["accept-encoding"] = accept
    return roundtrip(gw.port, method, path, fields, host=HOST)


# -- negotiation -----------------------------------------------------------------------------
@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_each_coding_round_trips(gw: Gateway, up: ScriptedUpstream, coding: str,
                                 framing: str) -> None:
    path = "/json?chunked" if framing == "chunked" else "/json"
    response = get(gw, path, accept=coding)
    assert response.status == 200, response
    assert response.header("content-encoding") == coding
    assert response.header("content-length") is None and response.framing == "chunked"
    assert decode(coding, response.body) == JSON_BODY
    assert len(response.body) < len(JSON_BODY) / 4
    assert "accept-encoding" in response.header_all("vary")
    assert up.last.header("accept-encoding") == coding  # the upstream still sees it


@pytest.mark.parametrize(("accept", "expected"), [
    pytest.param("gzip, br, zstd", "zstd", id="tie-goes-to-the-gateway-order"),
    pytest.param("gzip;q=0.5, br;q=0.9, zstd;q=0.1", "br", id="highest-q"),
    pytest.param("BR;Q=0.4, X-GZIP;q=0.8", "gzip", id="case-and-x-gzip"),
    pytest.param("*", "zstd", id="star"),
    pytest.param("zstd;q=0, *;q=0.5", "br", id="star-but-not-zstd"),
    pytest.param("gzip;q=0.5, identity", None, id="identity-preferred"),
    pytest.param("identity;q=0, gzip;q=0.2", "gzip", id="identity-excluded"),
    pytest.param("*;q=0", None, id="nothing-acceptable"),
    pytest.param("gzip;q=0", None, id="q-zero"),
    pytest.param("compress, deflate", None, id="only-unknown-codings"),
    pytest.param("gzip;q=oops, br", "br", id="unreadable-q"),
    pytest.param(None, None, id="no-accept-encoding"),
])
def test_accept_encoding_negotiation(gw: Gateway, up: ScriptedUpstream, accept: str | None,
                                     expected: str | None) -> None:
    response = get(gw, "/json", accept=accept)
    assert response.header("content-encoding") == expected
    assert decode(expected, response.body) == JSON_BODY
    assert "accept-encoding" in response.header_all("vary")
    if expected is None:  # nothing re-framed: the upstream's length is kept
        assert response.header("content-length") == str(len(JSON_BODY))


def test_algorithms_limit_what_is_offered(gw: Gateway, up: ScriptedUpstream) -> None:
    assert get(gw, "/gzip-only/json", accept="br, zstd").header("content-encoding") is None
    response = get(gw, "/gzip-only/json", accept="br, zstd, gzip;q=0.1")
    assert response.header("content-encoding") == "gzip"
    assert gzip.decompress(response.body) == JSON_BODY


# -- what is not compressed ------------------------------------------------------------------
def test_a_length_below_min_bytes_is_sent_as_it_came(gw: Gateway, up: ScriptedUpstream) -> None:
    response = get(gw, "/small")
    assert response.header("content-encoding") is None
    assert response.header("content-length") == str(len(SMALL)) and response.body == SMALL
    assert "accept-encoding" in response.header_all("vary")  # another could get it encoded


def test_a_chunked_body_is_encoded_as_it_streams_whatever_its_size(
        gw: Gateway, up: ScriptedUpstream) -> None:
    response = get(gw, "/small?chunked", accept="gzip")
    assert response.header("content-encoding") == "gzip"
    assert gzip.decompress(response.body) == SMALL


@pytest.mark.parametrize(("path", "status"), [
    pytest.param("/png", 200, id="media-type-not-listed"),
    pytest.param("/encoded", 200, id="already-encoded"),
    pytest.param("/partial", 206, id="range"),
    pytest.param("/no-transform", 200, id="no-transform"),
])
def test_bodies_that_are_never_compressed(gw: Gateway, up: ScriptedUpstream, path: str,
                                          status: int) -> None:
    upstream_body = reply_for(RecordedRequest(0, "GET", path, "HTTP/1.1",
                                              parse_head(b"GET / HTTP/1.1\r\n\r\n"))).body
    response = get(gw, path, range="bytes=0-99") if status == 206 else get(gw, path)
    assert response.status == status
    assert response.body == upstream_body
    assert response.header("content-length") == str(len(upstream_body))
    assert response.header_all("vary") == []
    if path == "/encoded":
        assert response.header("content-encoding") == "gzip"
    else:
        assert response.header("content-encoding") is None


def test_head_gets_the_get_head_without_an_encoding(gw: Gateway, up: ScriptedUpstream) -> None:
    response = get(gw, "/json", method="HEAD")
    assert response.status == 200 and response.body == b""
    assert response.header("content-encoding") is None
    assert response.header("content-length") == str(len(JSON_BODY))
    assert "accept-encoding" in response.header_all("vary")


@pytest.mark.parametrize(("path", "status"), [("/empty", 204), ("/not-modified", 304)])
def test_answers_without_a_body_are_untouched(gw: Gateway, up: ScriptedUpstream, path: str,
                                              status: int) -> None:
    response = get(gw, path)
    assert response.status == status and response.body == b""
    assert response.header("content-encoding") is None
    assert response.header_all("vary") == []
    if status == 304:
        assert response.header("etag") == '"v1"'


def test_an_encoded_answer_has_a_weak_etag_and_no_accept_ranges(
        gw: Gateway, up: ScriptedUpstream) -> None:
    encoded = get(gw, "/json", accept="br")
    assert encoded.header("etag") == 'W/"v1"'
    assert encoded.header("accept-ranges") is None
    plain = get(gw, "/json", accept=None)
    assert plain.header("etag") == '"v1"' and plain.header("accept-ranges") == "bytes"


def test_a_large_body_streams_through(gw: Gateway, up: ScriptedUpstream) -> None:
    for path in ("/big", "/big?chunked"):
        response = get(gw, path, accept="zstd")
        assert response.header("content-encoding") == "zstd"
        body = decode("zstd", response.body)
        assert len(body) == 3 << 20 and body[:4096] * 0 == b""
        assert len(response.body) < len(body)


def test_local_answers_are_not_compressed(gw: Gateway, up: ScriptedUpstream) -> None:
    """An error made by the gateway (an upstream 404 here is not one) keeps its framing."""
    response = roundtrip(gw.port, "GET", "/", {"accept-encoding": "gzip"}, host="other.test")
    assert response.status == 404 and response.header("content-encoding") is None


# -- streams ---------------------------------------------------------------------------------
def test_server_sent_events_still_stream(gw: Gateway, sse_upstream: Any) -> None:
    """Each event is decodable when it arrives, long before the stream ends."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with RawClient(gw.port, timeout=10) as client:
        client.request("GET", "/events", {"accept-encoding": "gzip"}, host=HOST)
        deadline = time.monotonic() + 10
        head = parse_head(client.read_until(b"\r\n\r\n", deadline))
        assert head.get("content-encoding") == "gzip"
        started = time.monotonic()
        seen = b""
        arrivals = []
        while b"tick 3" not in seen:
            size = parse_chunk_size(client.read_until(b"\r\n", deadline)[:-2])
            assert size, "the stream ended early"
            piece = client.read_exact(size + 2, deadline)[:-2]
            seen += decoder.decompress(piece)
            arrivals.append((time.monotonic() - started, seen.count(b"\n\n")))
    first_time, first_events = next(a for a in arrivals if a[1] >= 1)
    assert first_events == 1 and first_time < 0.3, arrivals  # not held for the others
    assert seen == b"".join(b"data: tick %d\n\n" % i for i in range(4))


# -- curl ------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("path", ["/json", "/json?chunked"])
def test_curl_compressed(gw: Gateway, up: ScriptedUpstream, path: str) -> None:
    url = f"http://127.0.0.1:{gw.port}{path}"
    done = subprocess.run(
        ["curl", "-sS", "--compressed", "-D", "-", "-H", f"Host: {HOST}", url],
        capture_output=True, timeout=20, check=True)
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert body == JSON_BODY
    assert b"content-encoding: " in head.lower()
    sent = up.last.header("accept-encoding") or ""
    assert any(coding in sent for coding in ("gzip", "br", "zstd"))


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_an_identity_content_encoding_is_replaced_not_listed(gw: Gateway, up: ScriptedUpstream,
                                                             coding: str) -> None:
    """An upstream's Content-Encoding: identity (or empty) names no coding: the encoded
    answer says only the new one, never "identity, gzip"."""
    response = get(gw, "/identity", accept=coding)
    assert response.status == 200
    assert response.header_all("content-encoding") == [coding]
    assert decode(coding, response.body) == JSON_BODY
