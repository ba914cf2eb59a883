"""Version skew with real processes: a control plane one IR schema ahead
(tests/support/ir_schema_next.py, schema 4) keeps this build's proxies (schema 3) serving,
answers each poll in the schema the proxy reads or 406 with the reason; a proxy given an IR
of a schema it cannot read NACKs it with the reason and keeps serving its version; a proxy of
the previous release (tests/support/ir_schema_prev.py, schema 2) is refused a configuration
that schema 2 cannot say (listener sections) and keeps serving its version, while the
Gateways that do not use them keep being served to it.
"""

from __future__ import annotations

import dataclasses
import json
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
    cluster.proxy("proxy", plane, "infra/edge")  # this build: reads schemas 2 and 3
    assert wait_until(lambda: served_by(gw, "/") == (200, "svc"), what="the proxy serves")

    def fleet() -> dict:
        body = plane.get("/v1/status")[1]
        return next((g for g in body["gateways"] if g["gateway"] == "infra/edge"), {})
    wait_until(lambda: (f := fleet()) and f["proxies"]
               and f["proxies"][0].get("version") == f["version"], what="the proxy's ACK")

    status, older = _poll(plane, schemas="3")
    assert status == 200 and older["schema"] == 3  # type: ignore[index]
    assert "address" in older["gateways"][0]["listeners"][0]  # type: ignore[index]
    assert _poll(plane, schemas="2,3")[1] == older  # what this build's proxy reads
    status, newer = _poll(plane, schemas="3,4")
    assert status == 200 and newer["schema"] == 4  # type: ignore[index]
    assert newer["gateways"][0]["listeners"][0]["bind"] == "127.0.0.1"  # type: ignore[index]
    status, refused = _poll(plane, schemas="7")
    print(f"\nversion skew: schema 3 form {older['version']}, schema 4 form "  # type: ignore[index]
          f"{newer['version']}; schemas=7 answered {status}: {refused}")  # type: ignore[index]
    assert status == 406
    assert "no IR schema in common: the proxy reads 7, this control plane writes 3, 4" in str(
        refused)
    # two schemas behind: the previous release's proxies (2), and one naming no schemas
    # (before they were negotiated), which reads schema 1
    status, behind = _poll(plane, schemas="1,2")
    assert status == 406 and "the proxy reads 1, 2, this control plane writes 3, 4" in str(
        behind)
    status, legacy = _poll(plane)
    assert status == 406 and "the proxy reads 1, this control plane writes 3, 4" in str(legacy)
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
    the first poll gets a schema 2 IR (made by a real control plane for a proxy of schema 2,
    which this build still reads), the next one a schema 4 IR of a changed configuration."""
    gw, data = _edge_ir(cluster, schemas="2")
    assert data["schema"] == 2
    v1 = json.dumps(data, sort_keys=True, separators=(",", ":"))
    first = CURRENT.decode(v1)
    changed = dataclasses.replace(first.gateways[0], trusted_proxies=("10.0.0.0/8",))
    v2, version2 = NEXT.encode(ir.seal(dataclasses.replace(first, gateways=(changed,))), {4})
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
    print(f"\nNACK of the schema 4 IR: {found[0]}")
    assert found[0]["version"] == version2
    assert ("IR schema 4 cannot be read by this proxy, which reads schema(s) 2, 3"
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
    """``propylon proxy`` as the previous release: reads schemas 1 and 2, polls with
    ``schemas=1,2`` (tests/support/ir_schema_prev.py)."""
    cluster.procs.start(name, "tests.support.ir_schema_prev", "proxy", "--control", plane.url,
                        "--gateway", gateway_key, "--token-file", str(cluster.tmp / "token"),
                        "--cache-dir", str(cluster.tmp / f"cache-{name}"),
                        "--admin", f"127.0.0.1:{free_port()}", "--access-log", "off",
                        "--log-level", "warning")


def _gateway_api_edge(public: int, internal: int) -> dict[str, Any]:
    listeners = [{"name": name, "port": port, "protocol": "HTTP"}
                 for name, port in (("public", public), ("internal", internal))]
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "infra"},
            "spec": {"gatewayClassName": "propylon", "listeners": listeners,
                     "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}]}}


def _http_route(name: str, prefix: str, section: str | None = None) -> dict[str, Any]:
    ref = {"name": "edge", **({"sectionName": section} if section else {})}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "infra"},
            "spec": {"parentRefs": [ref], "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
                 "backendRefs": [{"group": "propylon.dev", "kind": "Upstream", "name": "svc"}]}]}}


def test_a_proxy_of_the_previous_schema_is_refused_listener_sections(cluster: Cluster) -> None:
    """An HTTPRoute attached to the ``internal`` listener only (``sectionName``) makes the
    Gateway's IR use listener sections (schema 3). A proxy of schema 2 would ignore them and
    serve that route on the public listener too: its polls are answered 406 with the reason,
    it keeps serving its last version, and the proxy of a Gateway without sections, of the
    same release, keeps being served its changes."""
    plane = cluster.control()
    echo = cluster.echo("svc")
    public, internal, plain = free_port(), free_port(), free_port()
    for resource in [upstream("svc", "infra", echo), _gateway_api_edge(public, internal),
                     _http_route("shop", "/shop"),
                     gateway("plain", "infra", plain, ["shop"]),
                     upstream("svc", "shop", echo), route("main", "shop", "/", "svc")]:
        plane.must_put(resource)
    _previous_proxy(cluster, "edge-proxy", plane, "infra/edge")
    _previous_proxy(cluster, "plain-proxy", plane, "infra/plain")
    assert wait_until(lambda: served_by(public, "/shop") == (200, "svc")
                      and served_by(internal, "/shop") == (200, "svc")
                      and served_by(plain, "/") == (200, "svc"), what="both proxies serve")

    def edge() -> dict[str, Any]:
        body = plane.get("/v1/status")[1]
        return next((g for g in body["gateways"] if g["gateway"] == "infra/edge"), {})
    before = wait_until(lambda: (f := edge()) and f["proxies"]
                        and f["proxies"][0].get("version") == f["version"] and f["version"],
                        what="the edge proxy's ACK")
    status, older = _poll(plane, schemas="1,2")
    assert status == 200 and older["schema"] == 2  # type: ignore[index]

    plane.must_put(_http_route("internal", "/internal", section="internal"))

    def refused() -> str | None:
        status, answer = _poll(plane, schemas="1,2")
        return str(answer) if status == 406 else None
    reason = wait_until(refused, what="the schema 2 poll of infra/edge refused")
    print(f"\nschema 2 proxy of a Gateway with listener sections: 406 {reason}")
    assert ("Gateway infra/edge serves Route infra/internal on some of its listeners only "
            "(Gateway API sectionName or port), which IR schema 2 cannot express: a proxy "
            "reading schema 2 would serve every route on every listener; upgrade the proxy "
            "to read schema 3") in reason
    status, own = _poll(plane, schemas="2,3")  # this build's proxies get the sections
    assert status == 200 and own["schema"] == 3  # type: ignore[index]
    assert any(rule.get("sections") == ["internal"]
               for rule in own["gateways"][0]["rules"])  # type: ignore[index]

    # the previous release's proxy keeps its version: /internal is on no listener of it
    assert wait_until(lambda: "control plane answered 406" in cluster.procs.log("edge-proxy"),
                      what="the proxy's log of the refusal")
    assert "which IR schema 2 cannot express" in cluster.procs.log("control")
    assert served_by(internal, "/internal")[0] == 404
    assert served_by(public, "/internal")[0] == 404
    assert served_by(public, "/shop") == (200, "svc")
    now = edge()
    assert now["version"] != before and now["proxies"][0]["version"] == before

    # the other Gateway, without sections, is still served to a proxy of that release
    plane.must_put(route("more", "shop", "/more", "svc"))
    assert wait_until(lambda: served_by(plain, "/more") == (200, "svc"),
                      what="the plain Gateway's change served")
    # without the sections again, the edge Gateway is served to it again
    assert http("DELETE", plane.url + "/v1/resources/httproute/infra/internal",
                token=plane.token)[0] == 200
    plane.must_put(_http_route("other", "/other"))
    assert wait_until(lambda: served_by(public, "/other") == (200, "svc")
                      and served_by(internal, "/other") == (200, "svc"),
                      what="the edge Gateway served again")
    assert served_by(internal, "/internal")[0] == 404
