"""TLS termination: certificates chosen by SNI (exact, wildcard, default), TLS 1.2+ only, ALPN
http/1.1, 421 for a Host outside the negotiated certificate, certificate reload without
restart, and an sslyze scan against Mozilla's intermediate profile.
"""

from __future__ import annotations

import ssl
import warnings

import pytest

from tests.integration.edge._helpers import forward_all, https, listener_gateway
from tests.support import resources as r
from tests.support.gateway import Gateway
from tests.support.net import poll_until
from tests.support.tls import CertFiles, Pki, TLSRawClient
from tests.support.upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def certs(pki: Pki) -> dict[str, CertFiles]:
    return {
        "default": pki.issue("default", "default.test"),
        "exact": pki.issue("exact", "api.example.com"),
        "wildcard": pki.issue("wildcard", "*.shop.example"),
        "reload": pki.issue("reload", "reload.example"),
    }


@pytest.fixture(scope="module")
def tls_up(module_upstreams) -> ScriptedUpstream:
    return module_upstreams("tls-up")


@pytest.fixture(scope="module")
def gw(module_gateways, certs, tls_up: ScriptedUpstream) -> Gateway:
    listener = https(certs["default"], certs["exact"], certs["wildcard"], certs["reload"])
    return module_gateways(lambda port: r.dump(
        listener_gateway(port, **listener), *forward_all("tls-up", tls_up.port)))


def connect(gw: Gateway, pki: Pki, sni: str | None, **versions: ssl.TLSVersion) -> TLSRawClient:
    ctx = pki.client_context(**versions)
    ctx.check_hostname = False  # the tests compare the presented certificate themselves
    return TLSRawClient(gw.port, ctx, sni, timeout=5)


@pytest.mark.parametrize(("sni", "expected"), [
    pytest.param("api.example.com", "exact", id="exact-name"),
    pytest.param("cart.shop.example", "wildcard", id="wildcard-name"),
    pytest.param("API.EXAMPLE.COM", "exact", id="sni-case-insensitive"),
    pytest.param("unknown.test", "default", id="unknown-name-gets-default"),
    pytest.param(None, "default", id="no-sni-gets-default"),
])
def test_certificate_chosen_by_sni(gw, pki, certs, sni, expected: str) -> None:
    with connect(gw, pki, sni) as client:
        assert client.peer_der() == certs[expected].der


@pytest.mark.parametrize("version", [
    pytest.param(ssl.TLSVersion.TLSv1, id="tls1.0"),
    pytest.param(ssl.TLSVersion.TLSv1_1, id="tls1.1"),
])
def test_old_tls_versions_are_refused(gw, pki, version) -> None:
    with warnings.catch_warnings():  # the client side may use deprecated versions here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = pki.client_context(minimum=version, maximum=version)
    ctx.check_hostname = False
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer the old version
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        TLSRawClient(gw.port, ctx, "api.example.com", timeout=5).close()


@pytest.mark.parametrize("version", [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="tls1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="tls1.3"),
])
def test_tls12_and_13_accepted_with_alpn_http11(gw, pki, version) -> None:
    with connect(gw, pki, "api.example.com", minimum=version, maximum=version) as client:
        assert client.tls.version() == version.name.replace("v1_", "v1.")
        assert client.tls.selected_alpn_protocol() == "http/1.1"
        if version is ssl.TLSVersion.TLSv1_2:
            assert "GCM" in client.tls.cipher()[0] or "CHACHA20" in client.tls.cipher()[0]
        client.request("GET", "/v", host="api.example.com")
        assert client.read_final().status == 200


@pytest.mark.parametrize(("sni", "host", "status"), [
    pytest.param("api.example.com", "api.example.com", 200, id="host-matches-exact"),
    pytest.param("api.example.com", "api.example.com:443", 200, id="host-with-port-matches"),
    pytest.param("cart.shop.example", "pay.shop.example", 200, id="host-under-same-wildcard"),
    pytest.param("api.example.com", "cart.shop.example", 421, id="host-of-another-cert-421"),
    pytest.param("cart.shop.example", "other.example", 421, id="host-outside-wildcard-421"),
])
def test_host_outside_the_negotiated_certificate_gets_421(gw, pki, sni, host, status) -> None:
    with connect(gw, pki, sni) as client:
        client.request("GET", "/misdirected", host=host)
        response = client.read_final()
        assert response.status == status, response


def test_certificate_files_reloaded_without_restart(gw, pki, certs) -> None:
    before = certs["reload"].der
    with connect(gw, pki, "reload.example") as client:
        assert client.peer_der() == before
    renewed = pki.reissue(certs["reload"], "reload.example")
    assert renewed.der != before

    def presents_new() -> bool:
        with connect(gw, pki, "reload.example") as client:
            return client.peer_der() == renewed.der

    poll_until(presents_new, 10, interval=0.2, message="new certificate presented")
    with connect(gw, pki, "reload.example") as client:  # and it serves requests
        client.request("GET", "/after-reload", host="reload.example")
        assert client.read_final().status == 200
    certs["reload"] = renewed


# -- sslyze --------------------------------------------------------------------------------

# Findings about the test certificate itself, not the listener's TLS configuration:
TOLERATED = {
    # trustme's CA is in no trust store sslyze knows
    "certificate_path_validation",
    # trustme leaves are valid for years; the profile wants at most 366 days
    "maximum_certificate_lifespan",
}


# sslyze's bundled trust stores hold a certificate with a non-positive serial number
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_sslyze_reports_mozilla_intermediate_compliance(gw, certs) -> None:
    sslyze = pytest.importorskip("sslyze")
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )
    from sslyze.scanner.models import ServerScanRequest

    location = sslyze.ServerNetworkLocation("default.test", gw.port, ip_address="127.0.0.1")
    network = sslyze.ServerNetworkConfiguration("default.test")
    request = ServerScanRequest(server_location=location, network_configuration=network)
    scanner = sslyze.Scanner(per_server_concurrent_connections_limit=5)
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    completed = sslyze.ServerScanStatusEnum.COMPLETED
    assert result.scan_status == completed, result.connectivity_error_trace
    cert_info = result.scan_result.certificate_info
    assert cert_info.error_trace is None, "".join(cert_info.error_trace.format())
    intermediate = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    try:
        check_server_against_tls_configuration(result, intermediate)
        issues: dict[str, str] = {}
    except ServerNotCompliantWithTlsConfiguration as exc:
        issues = exc.issues
    print(f"\nsslyze intermediate: issues={issues}")
    assert set(issues) <= TOLERATED, {k: v for k, v in issues.items() if k not in TOLERATED}
