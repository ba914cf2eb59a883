"""The ``transform`` policy through a real gateway process and a scripted upstream that
records what it received: query edits, JSON body edits by pointer and Jinja2 templates on
requests and responses, the buffering cap (413 / 502), bodies left alone (not JSON, HEAD,
204, 304), framing rewritten for length-framed and chunked bodies, a compressed route, a
template that fails at run time (500, logged once), and template syntax errors refused by
``propylon validate`` with file:line."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import resources as r
from tests.support.client import RawClient, roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import Response, chunked
from tests.support.net import poll_until
from tests.support.upstream import RecordedRequest, Reply, ScriptedUpstream

HOST = "tf.test"
CAP = 256
ORDER = {"id": 7, "secret": "s3", "items": [{"sku": "a"}, {"sku": "b"}], "meta": {"v": 1}}

RESPONSE_TEMPLATE = (
    '{"status": {{ status }}, "method": "{{ method }}", "path": "{{ path }}", '
    '"who": {{ query.who | tojson }}, "first": {{ body["items"][0] | tojson }}, '
    '"type": {{ headers["content-type"] | tojson }}, '
    '"asked": {{ request_headers["x-asked"] | default("") | tojson }}}')
REQUEST_TEMPLATE = "order {{ body.id }} from {{ headers['x-user'] }} ({{ method }} {{ path }})"


def transform(**section: Any) -> list[dict[str, Any]]:
    return [{"transform": {"maxBodyBytes": CAP, **section}}]


JSON_EDITS = {"json": {"remove": ["/secret", "/items/0"],
                       "set": {"/meta/v": 2, "/meta/by": "gw", "/items/-": {"sku": "z"},
                               "/new~1key": True}}}
ROUTES: dict[str, list[dict[str, Any]]] = {
    "/query": transform(request={"query": {"set": {"limit": "10", "q s": "a&b"},
                                           "remove": ["debug", "limit"]}}),
    "/req-json": transform(request={"body": JSON_EDITS}),
    "/req-template": transform(request={"body": {"template": REQUEST_TEMPLATE,
                                                 "contentType": "text/plain"}}),
    "/resp-json": transform(response={"body": JSON_EDITS}),
    "/resp-template": transform(response={"body": {"template": RESPONSE_TEMPLATE}}),
    "/broken": transform(response={"body": {"template": "{{ 1 // body.zero }}"}}),
    "/mutating": transform(request={"body": {"template": "{{ headers.clear() }}"}}),
    "/zipped": [{"transform": {"response": {"body": JSON_EDITS}},
                 "compression": {"minBytes": 0, "algorithms": ["gzip"]}}],
}


def reply_for(request: RecordedRequest) -> Reply:
    path = request.path
    framing = "chunked" if "chunked" in request.target else "length"
    json_type = ("content-type", "application/json")
    if path.endswith("/text"):
        return Reply(headers=[("content-type", "text/plain")], body=b"not json at all",
                     framing=framing)
    if path.endswith("/big"):
        return Reply(headers=[json_type], body=b'{"a": "' + b"x" * CAP + b'"}',
                     framing=framing)
    if path.endswith("/empty"):
        return Reply(204, [json_type])
    if path.endswith("/not-modified"):
        return Reply(304, [json_type, ("etag", '"e1"')])
    if path.startswith(("/resp-", "/broken", "/zipped")):
        return Reply(headers=[json_type, ("etag", '"e1"')], body=json.dumps(ORDER).encode(),
                     framing=framing)
    return Reply(headers=[json_type], body=b"{}")


@pytest.fixture(scope="module")
def shared_upstream(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("tf")


@pytest.fixture(scope="module")
def gw(module_gateways, shared_upstream: ScriptedUpstream) -> Gateway:
    rules = [r.rule({"prefix": path}, forward=r.forward("up"), policies=policies)
             for path, policies in ROUTES.items()]
    return module_gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("tf", hostnames=[HOST], rules=rules),
        r.upstream("up", shared_upstream.port),
    ))


@pytest.fixture
def up(shared_upstream: ScriptedUpstream, gw: Gateway) -> ScriptedUpstream:
    shared_upstream.reset(reply_for)
    return shared_upstream


def send(gw: Gateway, method: str, target: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> Response:
    return roundtrip(gw.port, method, target, headers or {}, body, host=HOST)


def edited(doc: dict[str, Any]) -> dict[str, Any]:
    return {"id": 7, "items": [{"sku": "b"}, {"sku": "z"}], "meta": {"v": 2, "by": "gw"},
            "new/key": True} if doc == ORDER else doc


# -- query -----------------------------------------------------------------------------------
def test_query_set_and_remove(gw: Gateway, up: ScriptedUpstream) -> None:
    response = send(gw, "GET", "/query?a=1&debug=true&limit=99&debug&b=%20x&limit=3")
    assert response.status == 200
    assert up.last.target == "/query?a=1&b=%20x&limit=10&q%20s=a%26b"


# -- request bodies --------------------------------------------------------------------------
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_request_json_edits(gw: Gateway, up: ScriptedUpstream, framing: str) -> None:
    body = json.dumps(ORDER).encode()
    headers = {"content-type": "application/json; charset=utf-8"}
    if framing == "chunked":
        headers["transfer-encoding"] = "chunked"
        response = send(gw, "POST", "/req-json", chunked(body[:20], body[20:]), headers)
    else:
        response = send(gw, "POST", "/req-json", body, headers)
    assert response.status == 200, response
    received = up.last
    assert json.loads(received.body) == edited(ORDER)
    assert received.framing == "length"
    assert received.header("content-length") == str(len(received.body))


def test_a_request_body_that_is_not_json_is_untouched(gw: Gateway, up: ScriptedUpstream) -> None:
    for body, content_type in ((b"a=1&b=2", "application/x-www-form-urlencoded"),
                               (b"{broken", "application/json")):
        assert send(gw, "POST", "/req-json", body, {"content-type": content_type}).status == 200
        assert up.last.body == body


def test_request_template(gw: Gateway, up: ScriptedUpstream) -> None:
    response = send(gw, "PUT", "/req-template", json.dumps(ORDER).encode(),
                    {"content-type": "application/json", "x-user": "ann"})
    assert response.status == 200
    received = up.last
    assert received.body == b"order 7 from ann (PUT /req-template)"
    assert received.header("content-type") == "text/plain"
    assert received.header("content-length") == str(len(received.body))


def test_a_request_body_over_the_cap_is_413(gw: Gateway, up: ScriptedUpstream) -> None:
    big = b'{"a": "' + b"x" * CAP + b'"}'
    assert send(gw, "POST", "/req-json", big, {"content-type": "application/json"}).status == 413
    with RawClient(gw.port) as client:  # chunked: found while reading
        client.request("POST", "/req-json", {"transfer-encoding": "chunked",
                                             "content-type": "application/json"},
                       chunked(big[:100], big[100:]), host=HOST)
        assert client.read_final("POST").status == 413
    assert up.requests == []


def test_a_template_may_not_change_what_it_is_given(gw: Gateway, up: ScriptedUpstream) -> None:
    """The sandbox is immutable: a template calling a mutating method fails (500)."""
    response = send(gw, "POST", "/mutating", b"{}", {"content-type": "application/json"})
    assert response.status == 500
    assert up.requests == []


# -- response bodies -------------------------------------------------------------------------
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_response_json_edits(gw: Gateway, up: ScriptedUpstream, framing: str) -> None:
    target = "/resp-json?chunked" if framing == "chunked" else "/resp-json"
    response = send(gw, "GET", target)
    assert response.status == 200, response
    assert json.loads(response.body) == edited(ORDER)
    assert response.header("content-length") == str(len(response.body))
    assert response.header("etag") == 'W/"e1"'


def test_response_template(gw: Gateway, up: ScriptedUpstream) -> None:
    response = send(gw, "GET", "/resp-template?who=bob&who=eve", headers={"x-asked": "yes"})
    assert response.status == 200, response
    assert json.loads(response.body) == {
        "status": 200, "method": "GET", "path": "/resp-template", "who": "bob",
        "first": {"sku": "a"}, "type": "application/json", "asked": "yes"}


@pytest.mark.parametrize("target", ["/resp-json/text", "/resp-json/text?chunked"])
def test_a_response_that_is_not_json_is_untouched(gw: Gateway, up: ScriptedUpstream,
                                                  target: str) -> None:
    response = send(gw, "GET", target)
    assert response.status == 200 and response.body == b"not json at all"


@pytest.mark.parametrize("target", ["/resp-json/big", "/resp-json/big?chunked"])
def test_a_response_over_the_cap_is_502(gw: Gateway, up: ScriptedUpstream, target: str) -> None:
    assert send(gw, "GET", target).status == 502


@pytest.mark.parametrize(("method", "target", "status"), [
    ("HEAD", "/resp-json", 200), ("GET", "/resp-json/empty", 204),
    ("GET", "/resp-json/not-modified", 304)])
def test_answers_without_a_body_are_untouched(gw: Gateway, up: ScriptedUpstream, method: str,
                                              target: str, status: int) -> None:
    response = send(gw, method, target)
    assert response.status == status and response.body == b""
    if method == "HEAD":
        assert response.header("content-length") == str(len(json.dumps(ORDER)))


def test_compressed_route_gets_the_edited_body_encoded(gw: Gateway, up: ScriptedUpstream) -> None:
    """compression sees the response first (reverse order): transform decodes and re-encodes."""
    response = send(gw, "GET", "/zipped", headers={"accept-encoding": "gzip"})
    assert response.status == 200, response
    assert response.header("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(response.body)) == edited(ORDER)
    plain = send(gw, "GET", "/zipped")
    assert json.loads(plain.body) == edited(ORDER)


def test_a_failing_template_is_500_and_logged_once(gw: Gateway, up: ScriptedUpstream) -> None:
    for _ in range(3):
        assert send(gw, "GET", "/broken").status == 500
    poll_until(lambda: "transform response body failed" in gw.stderr_text())
    assert gw.stderr_text().count("transform response body failed") == 1
    assert send(gw, "GET", "/resp-json").status == 200  # the gateway keeps serving


# -- validation ------------------------------------------------------------------------------
def test_a_template_syntax_error_is_refused_with_file_and_line(tmp_path: Path) -> None:
    text = r.dump(
        r.gateway(8080),
        r.route("tf", hostnames=[HOST], rules=[r.rule(
            {"prefix": "/"}, forward=r.forward("up"),
            policies=[{"transform": {"response": {"body": {
                "template": "line one\n{% for x in body %}\n{{ x }"}}}}])]),
        r.upstream("up", 9001))
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = subprocess.run([sys.executable, "-m", "propylon", "validate", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "template:" in row)
    assert f"{config}:{line}:" in result.stderr, result.stderr
    assert "template line 3" in result.stderr and "transform" in result.stderr
