"""Pattern 6, mesh edge: client TLS terminated with the public certificate, mTLS to a service
that requires a client certificate from the mesh CA; without the client certificate the
gateway gets 502."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

from tests.support.e2e import (
    Procs,
    Reply,
    curl,
    find,
    load_example,
    readdress,
    run_gateway,
    wait_port,
    write_docs,
)
from tests.support.net import free_port
from tests.support.tls import Pki


def test_mesh_edge(procs: Procs, tmp_path: Path) -> None:
    public = Pki(tmp_path / "public", organization="Public CA")
    mesh = Pki(tmp_path / "mesh", organization="Mesh CA")
    shop = public.issue("shop", "shop.example.com")
    service = mesh.issue("payments", "payments.mesh.internal")
    edge_identity = mesh.issue("edge-client", "edge.mesh.internal",
                               common_name="edge.mesh.internal")
    svc_port, listen, admin = free_port(), free_port(), free_port()
    procs.start("payments", [sys.executable, "-m", "tests.support.tls_echo", "--port",
                             str(svc_port), "--cert", str(service.cert), "--key",
                             str(service.key), "--client-ca", str(mesh.ca_file),
                             "--name", "payments"])

    docs = readdress(load_example("mesh-edge"), listeners={"mesh-edge/https": ("127.0.0.1",
                                                                               listen)},
                     endpoints={"payments": ("127.0.0.1", svc_port)})
    gateway = find(docs, "Gateway", "mesh-edge")
    gateway["spec"]["listeners"][0]["tls"]["certificates"] = [
        {"certFile": str(shop.cert), "keyFile": str(shop.key)}]
    payments = find(docs, "Upstream", "payments")
    payments["spec"]["tls"].update(caFile=str(mesh.ca_file), certFile=str(edge_identity.cert),
                                   keyFile=str(edge_identity.key))
    # the same service without the client certificate, on /pay-no-cert
    bare = copy.deepcopy(payments)
    bare["metadata"]["name"] = "payments-no-client-cert"
    del bare["spec"]["tls"]["certFile"], bare["spec"]["tls"]["keyFile"]
    find(docs, "Route", "shop")["spec"]["rules"].insert(0, {
        "matches": [{"path": {"prefix": "/pay-no-cert"}}],
        "forward": {"backends": [{"upstream": "payments-no-client-cert"}]}})
    config = write_docs(tmp_path / "config" / "gateway.yaml", [*docs, bare])
    wait_port("127.0.0.1", svc_port)
    run_gateway(procs, "gateway", config, admin)

    def call(path: str) -> Reply:
        return curl(f"https://shop.example.com:{listen}{path}", cacert=public.ca_file,
                    resolve=f"shop.example.com:{listen}:127.0.0.1")

    reply = call("/pay/123")
    assert reply.status == 200, reply
    body = reply.json()
    assert body["service"] == "payments" and body["url"] == "/pay/123"
    assert body["client_cert"].endswith("commonName=edge.mesh.internal")  # mesh identity
    assert reply.echoed("x-forwarded-proto") == ["https"]

    # without the mesh client certificate the service refuses the handshake: 502
    assert call("/pay-no-cert/1").status == 502
    # and a client cannot reach the service directly without a mesh certificate
    direct = curl(f"https://payments.mesh.internal:{svc_port}/pay", cacert=mesh.ca_file,
                  resolve=f"payments.mesh.internal:{svc_port}:127.0.0.1")
    assert direct.status == 0
    # plain HTTP to the TLS listener does not get through either
    assert curl(f"http://127.0.0.1:{listen}/pay/1").status != 200
