"""mTLS on listeners (required / optional, x-forwarded-client-cert upstream, never the
client's own) and TLS origination to an upstream that requires a client certificate.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.edge._helpers import https, listener_gateway
from tests.support import resources as r
from tests.support.client import ConnectionClosed, roundtrip
from tests.support.gateway import Gateway
from tests.support.h1 import Response
from tests.support.net import free_port, poll_until
from tests.support.tls import CertFiles, Pki, TLSRawClient, TLSUpstream
from tests.support.upstream import ScriptedUpstream

OPTIONAL_PORT = free_port()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The service mesh's own CA: the TLS upstream's server and the gateway's client cert."""
    return Pki(tmp_path_factory.mktemp("mesh"), organization="Mesh CA")


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("stranger"), organization="Unknown CA")


@pytest.fixture(scope="module")
def client_cert(pki: Pki) -> CertFiles:
    return pki.issue("client", "client.example", common_name="client-one")


@pytest.fixture(scope="module")
def mesh_upstream(mesh: Pki) -> Iterator[TLSUpstream]:
    server = mesh.issue("mesh-server", "mesh.internal")
    upstream = TLSUpstream("mesh", server, client_ca=mesh.ca_file).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def alerting_upstreams(mesh: Pki) -> Iterator[tuple[int, int]]:
    """TLS 1.3 servers (OpenSSL's s_server) that require a client certificate and, as servers
    do, refuse a connection without one with an alert after the handshake (Python's asyncio
    server drops the connection without sending it); the ports of one for HTTP/1.1 and of one
    that selects ALPN h2."""
    server = mesh.issue("alerting-server", "mesh.internal")
    ports = free_port(), free_port()
    processes = [subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(server.cert),
         "-key", str(server.key), "-CAfile", str(mesh.ca_file), "-Verify", "1",
         "-verify_return_error", *alpn, "-www", "-quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port, alpn in zip(ports, [(), ("-alpn", "h2")], strict=True)]
    try:
        for port in ports:
            poll_until(lambda p=port: socket.create_connection(("127.0.0.1", p), 1).close()
                       or True, 10, message="openssl s_server listening")
        yield ports
    finally:
        for process in processes:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def plain_up(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("plain")


@pytest.fixture(scope="module")
def gw(module_gateways, pki: Pki, mesh: Pki, stranger: Pki, plain_up, mesh_upstream,
       alerting_upstreams) -> Gateway:
    server = pki.issue("gw-server", "gw.test")
    gw_client = mesh.issue("gw-client", "gateway.mesh")
    optional = {"name": "optional", "port": OPTIONAL_PORT, "address": "127.0.0.1",
                **https(server, client_ca=str(pki.ca_file), mode="optional")}
    tls_base = {"sni": "mesh.internal", "caFile": str(mesh.ca_file)}
    client_pair = {"certFile": str(gw_client.cert), "keyFile": str(gw_client.key)}
    return module_gateways(lambda port: r.dump(
        listener_gateway(port, **https(server, client_ca=str(pki.ca_file)),
                         extra_listeners=[optional]),
        r.route("all", rules=[
            r.rule({"prefix": "/mesh/good"}, forward=r.forward("mesh-good")),
            r.rule({"prefix": "/mesh/no-client-cert"}, forward=r.forward("mesh-nocert")),
            r.rule({"prefix": "/mesh/wrong-ca"}, forward=r.forward("mesh-wrongca")),
            r.rule({"prefix": "/mesh/alert-h2"}, forward=r.forward("mesh-alert-h2")),
            r.rule({"prefix": "/mesh/alert"}, forward=r.forward("mesh-alert")),
            r.rule(forward=r.forward("plain")),
        ]),
        r.upstream("plain", plain_up.port),
        r.upstream("mesh-good", mesh_upstream.port, tls={**tls_base, **client_pair}),
        r.upstream("mesh-nocert", mesh_upstream.port, tls=tls_base),
        r.upstream("mesh-alert", alerting_upstreams[0], tls=tls_base),
        r.upstream("mesh-alert-h2", alerting_upstreams[1], tls=tls_base, protocol="HTTP2"),
        r.upstream("mesh-wrongca", mesh_upstream.port,
                   tls={**tls_base, "caFile": str(stranger.ca_file), **client_pair}),
    ))


@pytest.fixture
def up(gw: Gateway, plain_up: ScriptedUpstream, mesh_upstream: TLSUpstream) -> ScriptedUpstream:
    plain_up.reset()
    mesh_upstream.reset()
    return plain_up


def https_get(port: int, pki: Pki, cert: CertFiles | None, target: str = "/",
              headers: list[tuple[str, str]] | None = None) -> Response:
    with TLSRawClient(port, pki.client_context(cert), "gw.test", timeout=5) as client:
        client.request("GET", target, headers, host="gw.test")
        return client.read_final()


def expected_xfcc_parts(cert: CertFiles) -> list[str]:
    return [f"Hash={cert.sha256};", "Subject=\"", "client-one", ";DNS=client.example"]


# -- mTLS on the listener ------------------------------------------------------------------


def test_required_refuses_a_client_without_certificate(gw, pki, up) -> None:
    with pytest.raises((ssl.SSLError, ConnectionClosed, ConnectionResetError, BrokenPipeError)):
        https_get(gw.port, pki, None)
    assert up.requests == []


def test_required_refuses_a_certificate_from_another_ca(gw, pki, stranger, up) -> None:
    foreign = stranger.issue("foreign-client", "client.example", common_name="client-one")
    with pytest.raises((ssl.SSLError, ConnectionClosed, ConnectionResetError, BrokenPipeError)):
        https_get(gw.port, pki, foreign)
    assert up.requests == []


@pytest.mark.parametrize("port", [
    pytest.param("required", id="required"), pytest.param("optional", id="optional"),
])
def test_verified_certificate_reaches_upstream_as_xfcc(gw, pki, client_cert, up, port) -> None:
    listen = gw.port if port == "required" else OPTIONAL_PORT
    response = https_get(listen, pki, client_cert)
    assert response.status == 200, response
    xfcc = up.last.head.get_all("x-forwarded-client-cert")
    assert len(xfcc) == 1, xfcc
    for part in expected_xfcc_parts(client_cert):
        assert part in xfcc[0], (part, xfcc[0])


def test_xfcc_subject_uses_rfc4514_attribute_names(gw, pki, client_cert, up) -> None:
    """Envoy writes the Subject as OpenSSL's RFC 2253/4514 string (``CN=...,OU=...,O=...``)."""
    assert https_get(gw.port, pki, client_cert).status == 200
    (xfcc,) = up.last.head.get_all("x-forwarded-client-cert")
    subject = xfcc.split('Subject="', 1)[1].split('"', 1)[0]
    assert subject.startswith("CN=client-one,"), subject


def test_optional_accepts_a_client_without_certificate(gw, pki, up) -> None:
    assert https_get(OPTIONAL_PORT, pki, None).status == 200
    assert up.last.header("x-forwarded-client-cert") is None


FORGED = 'Hash=00;Subject="CN=admin";DNS=admin.example'


@pytest.mark.parametrize("with_cert", [
    pytest.param(True, id="verified-client-forging"), pytest.param(False, id="anonymous-forging"),
])
def test_client_supplied_xfcc_never_reaches_upstream(gw, pki, client_cert, up, with_cert) -> None:
    cert = client_cert if with_cert else None
    response = https_get(OPTIONAL_PORT, pki, cert, headers=[("X-Forwarded-Client-Cert", FORGED)])
    assert response.status == 200
    values = up.last.head.get_all("x-forwarded-client-cert")
    assert all("admin" not in v for v in values), values
    assert len(values) == (1 if with_cert else 0), values


# -- TLS origination -----------------------------------------------------------------------


def test_origination_with_client_certificate_succeeds(
    gw, pki, client_cert, up, mesh_upstream
) -> None:
    response = https_get(gw.port, pki, client_cert, "/mesh/good/x")
    assert response.status == 200, response
    assert response.header("x-upstream") == "mesh"
    assert mesh_upstream.last.target == "/mesh/good/x"


@pytest.mark.parametrize(("path", "error"), [
    pytest.param("/mesh/no-client-cert", "upstream connection closed",
                 id="no-client-certificate-502"),
    # TLS 1.3: the server refuses the missing certificate after the handshake, with an alert
    # the gateway reads where it waits for the answer: the log says which
    pytest.param("/mesh/alert", "tlsv13 alert certificate required",
                 id="no-client-certificate-alert-logged-502"),
    pytest.param("/mesh/alert-h2", "tlsv13 alert certificate required",
                 id="no-client-certificate-alert-logged-h2-502"),
    pytest.param("/mesh/wrong-ca", "CERTIFICATE_VERIFY_FAILED", id="server-not-trusted-502"),
])
def test_origination_failures_give_502(gw, pki, client_cert, up, mesh_upstream, path,
                                       error) -> None:
    response = https_get(gw.port, pki, client_cert, path)
    assert response.status == 502, response
    assert mesh_upstream.requests == []
    line = poll_until(lambda: next((line for line in reversed(gw.access_log())
                                    if line["path"] == path), None), 5,
                      message=f"the access log line of {path}")
    assert error in line["error"], line["error"]


def test_plain_http_to_the_tls_listener_is_not_served(gw) -> None:
    with pytest.raises((ConnectionClosed, ConnectionResetError)):
        roundtrip(gw.port, "GET", "/", timeout=5)
