"""Version skew with real processes: a control plane one IR schema ahead
(tests/support/ir_schema_next.py, schema 5) keeps this build's proxies (schema 4) serving,
answers each poll in the schema the proxy reads or 406 with the reason; a proxy given an IR
of a schema it cannot read NACKs it with the reason and keeps serving its version; a proxy of
the previous release (tests/support/ir_schema_prev.py, schema 3) gets each rule with its
Gateway's policies listed in it and applies them as this build's proxies do, and one two
releases behind (schema 2) is refused with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from http.client import HTTPConnection
from typing import Any
from urllib.parse import urlencode

from propylon import ir
from propylon.ir.schema import CURRENT
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
from tests.support.ir_schema_next import NEXT
from tests.support.upstream import Reply


def _next_control(cluster: Cluster) -> ControlPlane:
    """``propylon control`` as the build one schema ahead."""
    port, token_file = free_port(), cluster.tmp / "token"
    cluster.procs.start("control-next", "tests.support.ir_schema_next", "control",
                        "--listen", f"127.0.0.1:{port}",
                        "--store", f"sqlite:///{cluster.tmp / 'control.db'}",
                        "--token-file", str(token_file), "--log-level", "warning")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: token_file.exists() and http("GET", url + "/v1/status")[0] == 401,
               what="control plane to listen")
    return ControlPlane(url, token_file.read_text().strip(), token_file)


def _poll(plane: ControlPlane, **query: str) -> tuple[int, object]:
    return plane.get(f"/v1/gateways/infra/edge/ir?{urlencode({'wait': '0', **query})}")


def test_a_control_plane_one_schema_ahead_serves_older_proxies(cluster: Cluster) -> None:
    plane = _next_control(cluster)
    gw = free_port()
    for resource in [gateway("edge", "infra", gw, ["shop"]),
                     upstream("svc", "shop", cluster.echo("svc")),
                     route("main", "shop", "/", "svc")]:
        plane.must_put(resource)
    cluster.proxy("proxy", plane, "infra/edge")  # this build: reads schemas 3 and 4
    assert wait_until(lambda: served_by(gw, "/") == (200, "svc"), what="the proxy serves")

    def fleet() -> dict:
        body = plane.get("/v1/status")[1]
        return next((g for g in body["gateways"] if g["gateway"] == "infra/edge"), {})
    wait_until(lambda: (f := fleet()) and f["proxies"]
               and f["proxies"][0].get("version") == f["version"], what="the proxy's ACK")

    status, older = _poll(plane, schemas="4")
    assert status == 200 and older["schema"] == 4  # type: ignore[index]
    assert "address" in older["gateways"][0]["listeners"][0]  # type: ignore[index]
    assert _poll(plane, schemas="3,4")[1] == older  # what this build's proxy reads
    status, newer = _poll(plane, schemas="4,5")
    assert status == 200 and newer["schema"] == 5  # type: ignore[index]
    assert newer["gateways"][0]["listeners"][0]["bind"] == "127.0.0.1"  # type: ignore[index]
    status, refused = _poll(plane, schemas="7")
    print(f"\nversion skew: schema 4 form {older['version']}, schema 5 form "  # type: ignore[index]
          f"{newer['version']}; schemas=7 answered {status}: {refused}")  # type: ignore[index]
    assert status == 406
    assert "no IR schema in common: the proxy reads 7, this control plane writes 4, 5" in str(
        refused)
    # two schemas behind: the previous release's proxies (3), and one naming no schemas
    # (before they were negotiated), which reads schema 1
    status, behind = _poll(plane, schemas="2,3")
    assert status == 406 and "the proxy reads 2, 3, this control plane writes 4, 5" in str(
        behind)
    status, legacy = _poll(plane)
    assert status == 406 and "the proxy reads 1, this control plane writes 4, 5" in str(legacy)
    assert _poll(plane, schemas="x")[0] == 400


def _edge_ir(cluster: Cluster, schemas: str) -> tuple[int, dict[str, Any]]:
    """A real control plane's IR of Gateway infra/edge (the port it listens on) with one
    Route, in ``schemas``; the control plane stays up (a test stops it to stand in for it)."""
    plane = cluster.control()
    gw = free_port()
    for resource in [gateway("edge", "infra", gw, ["shop"]),
                     upstream("svc", "shop", cluster.echo("svc")),
                     route("main", "shop", "/", "svc")]:
        plane.must_put(resource)

    def whole_ir() -> dict[str, Any] | None:
        """The IR once it holds the Route: the control plane translates after each write, so a
        poll right after the last PUT can still answer the IR of the first two resources."""
        status, data = _poll(plane, schemas=schemas)
        ok = status == 200 and any(g["rules"] for g in data["gateways"])  # type: ignore[index]
        return data if ok else None  # type: ignore[return-value]
    return gw, wait_until(whole_ir, what="the Gateway's IR with its Route")


def test_a_proxy_nacks_an_ir_it_cannot_read(cluster: Cluster, upstreams) -> None:
    """A stand-in control plane that ignores ``schemas`` (as one two releases ahead would):
    the first poll gets a schema 3 IR (made by a real control plane for a proxy of schema 3,
    which this build still reads), the next one a schema 5 IR of a changed configuration."""
    gw, data = _edge_ir(cluster, schemas="3")
    assert data["schema"] == 3
    v1 = json.dumps(data, sort_keys=True, separators=(",", ":"))
    first = CURRENT.decode(v1)
    changed = dataclasses.replace(first.gateways[0], trusted_proxies=("10.0.0.0/8",))
    v2, version2 = NEXT.encode(ir.seal(dataclasses.replace(first, gateways=(changed,))), {5})
    cluster.procs.stop("control")

    stand_in = upstreams("control")
    stand_in.handler = lambda request: (
        Reply(body=b'{"recorded": true}') if request.path.endswith("/reports")
        else Reply(headers=[("x-propylon-version", version2)], body=v2.encode())
        if f"after={first.version}" in request.target
        else Reply(headers=[("x-propylon-version", first.version)], body=v1.encode()))
    cluster.proxy("proxy", f"http://127.0.0.1:{stand_in.port}", "infra/edge")
    assert wait_until(lambda: served_by(gw, "/") == (200, "svc"), what="the proxy serves v1")

    def nacks() -> list[dict]:
        reports = [json.loads(q.body) for q in stand_in.requests if q.path.endswith("/reports")]
        return [r for r in reports if r["result"] == "NACK"]
    found = wait_until(nacks, what="a NACK")
    print(f"\nNACK of the schema 5 IR: {found[0]}")
    assert found[0]["version"] == version2
    assert ("IR schema 5 cannot be read by this proxy, which reads schema(s) 3, 4"
            in found[0]["error"])
    assert served_by(gw, "/") == (200, "svc")  # still serving v1


def test_a_proxy_serves_nothing_of_an_ir_that_fails_its_check(
        cluster: Cluster, upstreams) -> None:
    """A proxy hands a full IR in its own schema to its workers to compile before it has
    decoded and checked it (``Supervisor.prepare_text``): an IR whose content does not match
    its version is NACKed, and nothing of it is served, not even once the right text of that
    version comes (it is sent whole, never as a delta against what the workers prepared)."""
    gw, data = _edge_ir(cluster, schemas=str(CURRENT.native))
    good = json.dumps(data, sort_keys=True, separators=(",", ":"))
    version = data["version"]
    bad = good.replace('"prefix","value":"/"', '"prefix","value":"/x"')
    assert bad != good
    cluster.procs.stop("control")

    stand_in = upstreams("control")
    nacked: list[dict] = []

    def answer(request) -> Reply:  # type: ignore[no-untyped-def]
        if request.path.endswith("/reports"):
            report = json.loads(request.body)
            if report["result"] == "NACK":
                nacked.append(report)
            return Reply(body=b'{"recorded": true}')
        if nacked:  # the right text, without the header: the workers are not sent it
            return Reply(headers=[("x-propylon-version", version)], body=good.encode())
        return Reply(headers=[("x-propylon-version", version),
                              ("x-propylon-schema", str(CURRENT.native))], body=bad.encode())
    stand_in.handler = answer
    cluster.proxy("proxy", f"http://127.0.0.1:{stand_in.port}", "infra/edge")
    found = wait_until(lambda: nacked, what="a NACK")
    assert found[0]["version"] == version
    assert "IR content does not match its version" in found[0]["error"]
    assert wait_until(lambda: served_by(gw, "/") == (200, "svc"), what="the right IR served")
    assert served_by(gw, "/x")[0] == 200 and served_by(gw, "/")[0] == 200


def _previous_proxy(cluster: Cluster, name: str, plane: ControlPlane, gateway_key: str) -> None:
    """``propylon proxy`` as the previous release: reads schemas 2 and 3, polls with
    ``schemas=2,3`` (tests/support/ir_schema_prev.py)."""
    cluster.procs.start(name, "tests.support.ir_schema_prev", "proxy", "--control", plane.url,
                        "--gateway", gateway_key, "--token-file", str(cluster.tmp / "token"),
                        "--cache-dir", str(cluster.tmp / f"cache-{name}"),
                        "--admin", f"127.0.0.1:{free_port()}", "--access-log", "off",
                        "--log-level", "warning")


def _with_policy(resource: dict[str, Any], name: str, value: str,
                 rule: bool = False) -> dict[str, Any]:
    """``resource`` with a headers policy setting response header ``name`` to ``value``
    (on its first rule when ``rule``)."""
    item = {"headers": {"response": {"set": {name: value}}}}
    if rule:
        resource["spec"]["rules"][0]["policies"] = [item]
    else:
        resource["spec"]["policies"] = [item]
    return resource


def _headers_by(port: int, path: str) -> dict[str, str]:
    """The status and the x-gw and x-rule headers of a GET of ``path`` through a proxy."""
    with contextlib.closing(HTTPConnection("127.0.0.1", port, timeout=3)) as conn:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return {name.lower(): value for name, value in response.getheaders()
                if name.lower() in ("x-gw", "x-rule")} | {"status": str(response.status)}


def test_a_proxy_of_the_previous_schema_applies_the_gateway_s_policies(
        cluster: Cluster) -> None:
    """Schema 4 rules carry their own policies only; a proxy of schema 3 is sent each rule
    with its Gateway's policies listed in it and applies what this build's proxies apply:
    the Gateway's header on a rule without a headers policy of its own, the rule's own
    where it has one, and the Gateway's policy edited. A proxy of schema 2 is refused."""
    plane = cluster.control()
    echo = cluster.echo("svc")
    old_port, own_port = free_port(), free_port()
    resources = [upstream("svc", "shop", echo), route("main", "shop", "/", "svc"),
                 _with_policy(route("own", "shop", "/own", "svc"), "x-rule", "own", rule=True)]
    for name, port in (("old", old_port), ("own", own_port)):
        plane.must_put(_with_policy(gateway(name, "infra", port, ["shop"]), "x-gw", "one"))
    for resource in resources:
        plane.must_put(resource)
    _previous_proxy(cluster, "old-proxy", plane, "infra/old")
    cluster.proxy("own-proxy", plane, "infra/own")

    def served(value: str) -> bool:
        """Both proxies answer / with the Gateway's header, /own with the rule's only."""
        expected = {"/": {"x-gw": value, "status": "200"},
                    "/own": {"x-rule": "own", "status": "200"}}
        return all(_headers_by(port, path) == want
                   for port in (old_port, own_port) for path, want in expected.items())
    assert wait_until(lambda: served("one"), what="both proxies apply the policies")
    status, older = plane.get("/v1/gateways/infra/old/ir?wait=0&schemas=2,3")
    assert status == 200 and older["schema"] == 3  # type: ignore[index]
    listed = {rule["route"]: [p["source"] for p in rule["policies"]]
              for rule in older["gateways"][0]["rules"]}  # type: ignore[index]
    assert listed == {"Route shop/main": ["Gateway infra/old"],
                      "Route shop/own": ["Route shop/own rule #0"]}, listed
    plane.must_put(_with_policy(gateway("old", "infra", old_port, ["shop"]), "x-gw", "two"))
    plane.must_put(_with_policy(gateway("own", "infra", own_port, ["shop"]), "x-gw", "two"))
    assert wait_until(lambda: served("two"), what="the Gateway's policy edited, applied")
    status, behind = plane.get("/v1/gateways/infra/old/ir?wait=0&schemas=1,2")
    assert status == 406 and "the proxy reads 1, 2, this control plane writes 3, 4" in str(
        behind)
