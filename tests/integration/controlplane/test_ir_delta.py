"""Deltas from a real control plane to real proxies (``controlplane/ir_deltas.py``): a
one-route change reaches every proxy of a Gateway as a delta and each runs the control
plane's version; a poll naming a version the control plane does not hold gets the full
snapshot; a delta corrupted on the way is refused and the full snapshot fetched, so the proxy
never serves anything but the control plane's configuration."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest

from propylon.controlplane.ir_deltas import BASE_HEADER, DELTA_CONTENT_TYPE
from propylon.ir.schema import CURRENT
from propylon.net import httpclient
from propylon.proxy.agent import Agent
from propylon.proxy.ir_cache import IRCache
from tests.integration.conftest import UpstreamFactory
from tests.integration.controlplane.conftest import Cluster, ControlPlane
from tests.integration.controlplane.helpers import (
    free_port,
    gateway,
    http,
    route,
    served_by,
    upstream,
    wait_until,
)
from tests.support.upstream import Reply

GATEWAY = "infra/edge"


def _answers(plane: ControlPlane) -> dict[str, float]:
    """IR polls answered so far for the Gateway, by form (the control plane's /metrics)."""
    with urllib.request.urlopen(plane.url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = re.findall(r'^propylon_control_ir_answers_total\{form="(\w+)",gateway="([^"]+)"\} '
                       r'(\S+)$|^propylon_control_ir_answers_total\{gateway="([^"]+)",'
                       r'form="(\w+)"\} (\S+)$', text, re.M)
    totals = {"delta": 0.0, "full": 0.0}
    for form_a, gw_a, value_a, gw_b, form_b, value_b in found:
        if (gw_a or gw_b) == GATEWAY:
            totals[form_a or form_b] = float(value_a or value_b)
    return totals


def _version(plane: ControlPlane) -> str | None:
    fleet = [g for g in plane.get("/v1/status")[1]["gateways"] if g["gateway"] == GATEWAY]
    return fleet[0]["version"] if fleet else None


def _proxy_version(admin: int) -> str | None:
    version = http("GET", f"http://127.0.0.1:{admin}/stats")[1]["version"]
    return version if isinstance(version, str) else None


def _configure(cluster: Cluster, plane: ControlPlane, routes: int) -> int:
    port = free_port()
    plane.must_put(gateway("edge", "infra", port, ["shop"]))
    plane.must_put(upstream("svc", "shop", cluster.echo("svc")))
    for i in range(routes):
        plane.must_put(route(f"r{i}", "shop", f"/r{i}", "svc"))
    return port


def _all_on(plane: ControlPlane, admins: list[int]) -> str | None:
    """The control plane's version once every proxy runs it."""
    version = _version(plane)
    return version if version and all(_proxy_version(a) == version for a in admins) else None


def _poll(plane: ControlPlane, **query: str) -> tuple[int, dict[str, str], bytes]:
    """A poll as this build's proxies make it (naming the schemas they read)."""
    reads = ",".join(map(str, CURRENT.supported()))
    url = (f"{plane.url}/v1/gateways/{GATEWAY}/ir?"
           f"{urlencode({'wait': '0', 'schemas': reads, **query})}")
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {plane.token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()


def test_a_one_route_change_reaches_every_proxy_as_a_delta(cluster: Cluster) -> None:
    plane = cluster.control()
    port = _configure(cluster, plane, routes=5)
    admins = [cluster.proxy(f"proxy{i}", plane, GATEWAY, cache=f"cache{i}") for i in range(3)]
    first = wait_until(lambda: _all_on(plane, admins), what="every proxy on the first version")
    assert first is not None
    before = _answers(plane)

    plane.must_put(route("added", "shop", "/added", "svc"))
    second = wait_until(lambda: (v := _all_on(plane, admins)) != first and v,
                        what="every proxy on the new version")
    after = _answers(plane)
    print(f"\nIR answers for one added Route, 3 proxies: {before} -> {after}")
    assert after["delta"] >= before["delta"] + 3
    assert after["full"] == before["full"]
    # the workers rebuilt the version from the same delta (sent on as it came): all of it
    assert served_by(port, "/added") == (200, "svc")
    assert all(served_by(port, f"/r{i}/x") == (200, "svc") for i in range(5))
    assert served_by(port, "/elsewhere")[0] == 404

    # a proxy naming a version the control plane holds gets a delta; one it does not, the
    # whole snapshot, as does a proxy that does not ask for deltas
    native = str(CURRENT.native)
    status, headers, body = _poll(plane, version=first, after=first, delta=native)
    assert status == 200 and headers["content-type"] == DELTA_CONTENT_TYPE
    assert headers[BASE_HEADER] == first and headers["x-propylon-version"] == second
    assert json.loads(body)["base"] == first
    rules = json.loads(body)["snapshot"]["gateways"][0]["rules"]
    assert all(type(item) is not list for item in rules)  # single indices: no runs asked
    # a proxy reading runs of indices (as this build's do) gets the same delta with the
    # rules it holds as [first, end] runs: its size follows the change
    status, headers, body = _poll(plane, version=first, after=first, delta=native, runs="1")
    assert status == 200 and headers["content-type"] == DELTA_CONTENT_TYPE
    runs = json.loads(body)["snapshot"]["gateways"][0]["rules"]
    assert any(type(item) is list for item in runs) and len(runs) < len(rules), runs
    for query in ({"version": "0123456789abcdef", "after": first, "delta": native},
                  {"version": first, "after": first}):
        status, headers, body = _poll(plane, **query)
        assert status == 200 and headers["content-type"] == "application/json", query
        assert BASE_HEADER not in headers
        assert CURRENT.decode(body).version == second


class _Tampering(ThreadingHTTPServer):
    """Between the proxy and the control plane: forwards everything, and swaps two rules of
    every delta (the version it names stays the control plane's)."""

    daemon_threads = True

    def __init__(self, control: str) -> None:
        self.control = control
        self.tampered = 0
        super().__init__(("127.0.0.1", 0), _Forward)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a long poll cut by the control plane's stop at teardown


class _Forward(BaseHTTPRequestHandler):
    server: _Tampering

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        self._forward(self.rfile.read(int(self.headers.get("content-length", 0))))

    def _forward(self, body: bytes | None) -> None:
        request = urllib.request.Request(
            self.server.control + self.path, data=body, method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, headers, data = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:
            status, headers, data = exc.code, exc.headers, exc.read()
        if headers.get("content-type") == DELTA_CONTENT_TYPE:
            tampered = _swap_two_rules(data)
            self.server.tampered += tampered != data
            data = tampered
        self.send_response(status)
        for name in ("content-type", "x-propylon-version", BASE_HEADER):
            if headers.get(name):
                self.send_header(name, headers[name])
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def _swap_two_rules(body: bytes) -> bytes:
    """The delta with its first two rules (indexes or whole) swapped; unchanged when it has
    fewer (an early version, translated before every Route was written)."""
    delta = json.loads(body)
    rules = delta["snapshot"]["gateways"][0]["rules"]
    if len(rules) < 2:
        return body
    rules[0], rules[1] = rules[1], rules[0]
    return json.dumps(delta).encode()


@pytest.fixture
def tampering() -> Iterator[list[_Tampering]]:
    started: list[_Tampering] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def test_a_corrupted_delta_is_refused_and_the_full_snapshot_installed(
        cluster: Cluster, tampering: list[_Tampering]) -> None:
    plane = cluster.control()
    port = _configure(cluster, plane, routes=4)
    between = _Tampering(plane.url)
    tampering.append(between)
    threading.Thread(target=between.serve_forever, daemon=True).start()
    admin = cluster.proxy("proxy", f"http://127.0.0.1:{between.server_port}", GATEWAY)
    first = wait_until(lambda: _all_on(plane, [admin]), what="the proxy on the first version")
    before = _answers(plane)

    plane.must_put(route("added", "shop", "/added", "svc"))
    second = wait_until(lambda: (v := _all_on(plane, [admin])) != first and v,
                        what="the proxy on the new version")
    after = _answers(plane)
    print(f"\ncorrupted deltas: {between.tampered}; IR answers {before} -> {after}")
    assert between.tampered >= 1
    assert after["full"] >= before["full"] + 1  # fetched whole after the refusal
    assert served_by(port, "/added") == (200, "svc")
    served = http("GET", f"http://127.0.0.1:{admin}/config")[1]
    _, _, body = _poll(plane, version="", after="")
    expected = json.loads(body)
    assert expected["version"] == second == served["version"]
    assert [r["id"] for r in served["gateways"][0]["rules"]] == \
        [r["id"] for r in expected["gateways"][0]["rules"]]
    assert "fetching the full IR" in cluster.procs.log("proxy")


def test_an_ir_answer_larger_than_the_clients_default_bound_is_read(
        upstreams: UpstreamFactory, tmp_path: Any) -> None:
    """A full snapshot of 10,000 routes is ~4.6 MB, over the HTTP client's default 4 MiB: the
    agent reads IR answers up to its own bound (the proxies of a 10,000-route Gateway kept
    logging "response body too large" and never got the configuration)."""
    control = upstreams("control")
    control.handler = lambda request: Reply(body_size=6 * 1024 * 1024)
    agent = Agent(f"http://127.0.0.1:{control.port}", GATEWAY, "token",
                  IRCache(tmp_path, GATEWAY))
    url = f"http://127.0.0.1:{control.port}/v1/gateways/{GATEWAY}/ir?after=x"

    async def get() -> httpclient.Response:
        try:
            return await agent._get_ir(url)
        finally:
            agent.close()

    answer = asyncio.run(get())
    assert answer.status == 200 and len(answer.body) == 6 * 1024 * 1024
    assert control.requests[0].target == f"/v1/gateways/{GATEWAY}/ir?after=x"
    assert control.requests[0].header("authorization") == "Bearer token"
    control.handler = lambda request: Reply(status=200, body=b"x", delay=5)
    # an agent keeps its connections for the event loop it runs in: another for this loop
    agent = Agent(f"http://127.0.0.1:{control.port}", GATEWAY, "token",
                  IRCache(tmp_path, GATEWAY))
    agent.wait = -9.9  # the poll's deadline is wait + 10 s
    try:
        asyncio.run(get())
    except httpclient.HttpError as exc:
        assert f"GET {url}" in str(exc)
    else:
        raise AssertionError("no timeout")
