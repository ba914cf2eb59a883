"""Pattern 4, egress gateway: internal clients reach an "external" TLS API only through the
gateway (absolute-form proxy requests or Host routing); unlisted destinations get 403; the
gateway originates TLS (verifying the partner's certificate) and injects a credential from an
env secret that neither the client, nor /config, nor the logs ever show.

Network namespaces: internal client | gateway | "internet" (the partner API)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from tests.support.e2e import (
    Procs,
    curl,
    find,
    load_example,
    readdress,
    run_gateway,
    tcp_connect_fails,
    wait_port,
    write_docs,
)
from tests.support.net import free_port, poll_until
from tests.support.netns import Networks
from tests.support.tls import Pki

TOKEN = "egress-secret-7f3a9c2e51d04b8a"


def test_egress(isolated: tuple[Networks, Procs], tmp_path: Path) -> None:
    nets, procs = isolated
    partner_pki = Pki(tmp_path / "partner-pki", organization="Partner public CA")
    partner_cert = partner_pki.issue("partner", "api.partner.example")
    api_port, listen, admin = free_port(), free_port(), free_port()
    procs.start("partner-api", [sys.executable, "-m", "tests.support.tls_echo",
                                "--host", nets.services_ip, "--port", str(api_port),
                                "--cert", str(partner_cert.cert), "--key", str(partner_cert.key),
                                "--name", "partner-api"], ns=nets.services_ns)

    docs = readdress(load_example("egress"), listeners={"egress/proxy": (nets.gateway_front_ip,
                                                                         listen)},
                     endpoints={"partner-api": (nets.services_ip, api_port)})
    find(docs, "Upstream", "partner-api")["spec"]["tls"]["caFile"] = str(partner_pki.ca_file)
    # a second destination whose certificate does not match: TLS verification must refuse it
    wrong = {"apiVersion": "propylon.dev/v1", "kind": "Upstream",
             "metadata": {"name": "impostor", "namespace": "egress"},
             "spec": {"endpoints": [{"address": nets.services_ip, "port": api_port}],
                      "tls": {"sni": "impostor.example", "caFile": str(partner_pki.ca_file)}}}
    wrong_route = {"apiVersion": "propylon.dev/v1", "kind": "Route",
                   "metadata": {"name": "impostor", "namespace": "egress"},
                   "spec": {"hostnames": ["impostor.example"],
                            "rules": [{"forward": {"backends": [{"upstream": "impostor"}]}}]}}
    config = write_docs(tmp_path / "config" / "gateway.yaml", [*docs, wrong, wrong_route])
    wait_port(nets.services_ip, api_port, ns=nets.services_ns)
    access_log = tmp_path / "access.log"
    run_gateway(procs, "gateway", config, admin, ns=nets.gateway_ns,
                env={"PARTNER_API_TOKEN": TOKEN}, access_log=access_log)
    proxy = f"http://{nets.gateway_front_ip}:{listen}"
    expected = "sha256:" + hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()

    # allowed destination, absolute-form (the gateway as an HTTP proxy)
    reply = curl("http://api.partner.example/v1/orders?id=7", proxy=proxy, ns=nets.consumer_ns,
                 headers=[("authorization", "Bearer client-guess"), ("cookie", "sid=1")])
    assert reply.status == 200, reply
    seen = reply.json()
    assert seen["service"] == "partner-api" and seen["url"] == "/v1/orders?id=7"
    assert reply.echoed("authorization") == [expected]  # injected, the client's replaced
    assert reply.echoed("host") == ["api.partner.example"]
    assert reply.echoed("cookie") == []

    # allowed destination by Host (no proxy configuration on the client)
    reply = curl(f"{proxy}/v1/ping", headers=[("host", "api.partner.example")],
                 ns=nets.consumer_ns)
    assert reply.status == 200 and reply.echoed("authorization") == [expected]

    # anything else: 403 from the catch-all, never forwarded
    for url in ("http://evil.example/exfiltrate", "http://api.partner.example.evil.example/",
                f"http://{nets.services_ip}:{api_port}/"):
        denied = curl(url, proxy=proxy, ns=nets.consumer_ns)
        assert denied.status == 403, (url, denied)
        assert denied.body == b"egress destination not allowed\n"

    # TLS origination verifies the server: a certificate not valid for the SNI -> 502
    assert curl("http://impostor.example/", proxy=proxy, ns=nets.consumer_ns).status == 502

    # the secret never shows: client answers, /config, access log, gateway output
    replies = [curl("http://api.partner.example/x", proxy=proxy, ns=nets.consumer_ns)]
    for r in [*replies, reply]:
        assert TOKEN not in r.body.decode() + repr(r.headers)
    config_dump = curl(f"http://127.0.0.1:{admin}/config", ns=nets.gateway_ns)
    assert config_dump.status == 200
    assert TOKEN not in config_dump.body.decode()
    assert "<redacted>" in config_dump.body.decode()
    # lines are written in batches a few milliseconds after the request: wait for the last one
    logged = poll_until(lambda: '"path":"/x"' in access_log.read_text(), timeout=5,
                        message="the access-log line of the last request")
    assert logged and TOKEN not in access_log.read_text()
    assert TOKEN not in procs.log("gateway")

    if nets.isolated:  # the partner API is reachable only through the gateway
        assert tcp_connect_fails(nets.services_ip, api_port, ns=nets.consumer_ns)
    else:
        nets.skip("partner API unreachable from the client except through the gateway")
