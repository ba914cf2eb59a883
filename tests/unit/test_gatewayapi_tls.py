"""Certificates from ``kubernetes.io/tls`` Secrets (``config/k8s_secrets.py``): Gateway API
HTTPS listeners and Ingress ``spec.tls`` converted, checked and carried inline in the IR;
unusable references as listener conditions; nothing secret in issues, statuses or shown IR;
the private files workers load them through."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from propylon import ir
from propylon.admin.redact import REDACTED, redact
from propylon.config import load_text
from propylon.proxy import pem_files
from propylon.proxy.tls import ServerTLS
from propylon.translate import translate_with_issues
from tests.support.k8s_tls import SelfSigned, self_signed, tls_secret

A = self_signed("a.test")
B = self_signed("b.test")


def gateway(*refs: dict[str, Any], namespace: str = "infra", http: bool = True
            ) -> dict[str, Any]:
    listeners: list[dict[str, Any]] = [
        {"name": "https", "port": 8443, "protocol": "HTTPS",
         "tls": {"mode": "Terminate", "certificateRefs": list(refs)}}]
    if http:
        listeners.append({"name": "http", "port": 8080, "protocol": "HTTP"})
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": namespace},
            "spec": {"gatewayClassName": "propylon", "listeners": listeners}}


def translated(*docs: dict[str, Any]):
    loaded = load_text(yaml.safe_dump_all(docs))
    assert loaded.ok, loaded.errors
    return translate_with_issues(loaded.resources)


def listeners(translation) -> dict[str, ir.ListenerIR]:
    return {lst.name: lst for g in translation.snapshot.gateways for lst in g.listeners}


def status(translation, kind: str = "Gateway", key: str = "infra/gw") -> ir.StatusIR:
    return next(s for s in translation.snapshot.statuses if (s.kind, s.key) == (kind, key))


def shown(translation) -> str:
    """Everything a user sees of a translation: issues, statuses, the redacted IR."""
    return "\n".join([*map(str, translation.issues), json.dumps(redact(
        ir.to_data(translation.snapshot)))])


def assert_no_key(text: str, *certs: SelfSigned) -> None:
    for cert in certs:
        body = cert.key_pem.decode().splitlines()[1]  # a line of the key's base64
        assert body not in text
        assert base64.b64encode(cert.key_pem).decode()[:40] not in text
    assert "PRIVATE KEY" not in text


@pytest.mark.parametrize("string_data", [False, True], ids=["data", "stringData"])
def test_https_listener_gets_the_secret_inline(string_data: bool) -> None:
    result = translated(gateway({"name": "cert"}),
                        tls_secret("cert", "infra", A, string_data=string_data))
    https = listeners(result)["https"]
    assert https.protocol == "HTTPS" and https.tls is not None
    [certificate] = https.tls.certificates
    assert (certificate.cert_file, certificate.key_file) == ("", "")
    assert certificate.certificate_pem == A.cert_pem.decode()
    assert certificate.private_key == A.key_pem.decode()
    assert certificate.source == "Secret infra/cert"
    assert status(result).state == "Accepted"
    assert_no_key(shown(result), A)


def test_inline_fields_are_left_out_of_the_json_of_file_certificates() -> None:
    data = ir.to_data(ir.CertificateIR("/c.pem", "/c.key"))
    assert data == {"cert_file": "/c.pem", "key_file": "/c.key"}
    inline = ir.CertificateIR("", "", "CERT", "KEY", "Secret a/b")
    assert ir.from_data(ir.CertificateIR, ir.to_data(inline)) == inline
    assert redact(ir.to_data(inline))["private_key"] == REDACTED


def test_a_changed_secret_is_a_new_version() -> None:
    first = translated(gateway({"name": "cert"}), tls_secret("cert", "infra", A))
    second = translated(gateway({"name": "cert"}), tls_secret("cert", "infra", B))
    again = translated(gateway({"name": "cert"}), tls_secret("cert", "infra", A))
    assert first.snapshot.version != second.snapshot.version
    assert first.snapshot.version == again.snapshot.version


def _other_key() -> dict[str, str]:
    return {"tls.crt": base64.b64encode(A.cert_pem).decode(),
            "tls.key": base64.b64encode(B.key_pem).decode()}


BAD = [
    pytest.param({"name": "missing"}, [], "InvalidCertificateRef", "Secret infra/missing not found",
                 id="missing"),
    pytest.param({"name": "cert"}, [tls_secret("cert", "infra", A, type="Opaque")],
                 "InvalidCertificateRef", "type is 'Opaque'", id="wrong-type"),
    pytest.param({"name": "cert"}, [tls_secret("cert", "infra", A, data={
        "tls.crt": "%%%not base64", "tls.key": "AAAA"})], "InvalidCertificateRef",
        "data.tls.crt is not valid base64", id="undecodable"),
    pytest.param({"name": "cert"}, [tls_secret("cert", "infra", A, data={
        "tls.crt": base64.b64encode(b"hello").decode(),
        "tls.key": base64.b64encode(A.key_pem).decode()})], "InvalidCertificateRef",
        "tls.crt is not a PEM certificate chain", id="not-pem"),
    pytest.param({"name": "cert"}, [tls_secret("cert", "infra", A, data=_other_key())],
                 "InvalidCertificateRef", "tls.key is not the key of the first certificate",
                 id="key-mismatch"),
    pytest.param({"name": "cert"}, [tls_secret("cert", "infra", A, data={
        "tls.crt": base64.b64encode(A.cert_pem).decode()})], "InvalidCertificateRef",
        "data.tls.key is missing", id="no-key"),
    pytest.param({"name": "cert", "kind": "ConfigMap"}, [], "InvalidCertificateRef",
                 "core/ConfigMap is not supported", id="other-kind"),
    pytest.param({"name": "cert", "namespace": "certs"}, [tls_secret("cert", "certs", A)],
                 "RefNotPermitted", "no ReferenceGrant in certs allows Gateway from infra",
                 id="cross-namespace-without-grant"),
]


@pytest.mark.parametrize(("ref", "docs", "reason", "message"), BAD)
def test_an_unusable_reference_leaves_the_listener_out_and_the_rest_serving(
        ref: dict[str, Any], docs: list[dict[str, Any]], reason: str, message: str) -> None:
    result = translated(gateway(ref), *docs)
    served = listeners(result)
    assert "https" not in served and "http" in served  # the HTTP listener keeps serving
    found = [r for r in status(result).reasons if "listener https: ResolvedRefs=False" in r]
    assert found and reason in found[0] and message in found[0], status(result).reasons
    assert any("spec.listeners[0].tls.certificateRefs[0]" in str(i) for i in result.issues)
    assert_no_key(shown(result), A, B)


def test_usable_references_are_served_beside_an_unusable_one() -> None:
    result = translated(gateway({"name": "a"}, {"name": "missing"}, {"name": "b"}),
                        tls_secret("a", "infra", A), tls_secret("b", "infra", B))
    https = listeners(result)["https"]
    assert https.tls is not None
    assert [c.source for c in https.tls.certificates] == ["Secret infra/a", "Secret infra/b"]
    assert any("ResolvedRefs=False InvalidCertificateRef" in r for r in status(result).reasons)


def _grant(to_kind: str, name: str | None = None) -> dict[str, Any]:
    target = {"group": "", "kind": to_kind, **({"name": name} if name else {})}
    return {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "grant", "namespace": "certs"},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                               "namespace": "infra"}], "to": [target]}}


@pytest.mark.parametrize(("grant", "served"), [
    pytest.param(_grant("Secret"), True, id="any-secret"),
    pytest.param(_grant("Secret", "cert"), True, id="that-secret"),
    pytest.param(_grant("Secret", "other"), False, id="another-secret"),
    pytest.param(_grant("Service"), False, id="services-only"),
])
def test_cross_namespace_secret_needs_a_grant_for_secrets(grant: dict[str, Any],
                                                          served: bool) -> None:
    result = translated(gateway({"name": "cert", "namespace": "certs"}),
                        tls_secret("cert", "certs", A), grant)
    assert ("https" in listeners(result)) is served


def test_passthrough_and_other_protocols_are_not_accepted() -> None:
    passthrough = gateway({"name": "cert"})
    passthrough["spec"]["listeners"][0]["tls"]["mode"] = "Passthrough"
    result = translated(passthrough, tls_secret("cert", "infra", A))
    assert "https" not in listeners(result)
    assert any("listener https: Accepted=False UnsupportedValue" in r
               for r in status(result).reasons)
    tcp = gateway(http=True)
    tcp["spec"]["listeners"][0] = {"name": "tcp", "port": 9000, "protocol": "TCP"}
    assert any("Accepted=False UnsupportedProtocol" in r
               for r in status(translated(tcp)).reasons)


def test_http_and_https_on_one_port_conflict() -> None:
    doc = gateway({"name": "cert"})
    doc["spec"]["listeners"][1]["port"] = 8443
    result = translated(doc, tls_secret("cert", "infra", A))
    assert set(listeners(result)) == {"https"}
    assert any("listener http: Conflicted=True ProtocolConflict" in r
               for r in status(result).reasons)


def test_https_listeners_sharing_a_port_share_their_certificates() -> None:
    doc = gateway({"name": "a"}, http=False)
    doc["spec"]["listeners"][0]["hostname"] = "a.test"
    doc["spec"]["listeners"].append({"name": "b", "port": 8443, "protocol": "HTTPS",
                                     "hostname": "b.test",
                                     "tls": {"certificateRefs": [{"name": "b"}]}})
    result = translated(doc, tls_secret("a", "infra", A), tls_secret("b", "infra", B))
    [https] = listeners(result).values()
    assert https.hostnames == ("a.test", "b.test") and https.tls is not None
    assert [c.source for c in https.tls.certificates] == ["Secret infra/a", "Secret infra/b"]


# -- Ingress ----------------------------------------------------------------------------------
def ingress_gateway(protocol: str = "HTTPS") -> dict[str, Any]:
    listener: dict[str, Any] = {"name": "web", "port": 8443, "protocol": protocol}
    if protocol == "HTTPS":
        listener["tls"] = {"certificates": [{"certFile": "/default.pem",
                                             "keyFile": "/default.key"}]}
    return {"apiVersion": "propylon.dev/v1", "kind": "Gateway",
            "metadata": {"name": "ingress", "namespace": "infra"},
            "spec": {"listeners": [listener], "routeSelector": {
                "namespaces": ["*"], "matchLabels": {"propylon.dev/ingress-class": "propylon"}}}}


def ingress(*tls: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"ingressClassName": "propylon", "tls": list(tls),
                     "rules": [{"host": "shop.test", "http": {"paths": [
                         {"path": "/", "pathType": "Prefix", "backend": {"service": {
                             "name": "shop", "port": {"number": 80}}}}]}}]}}


SHOP_UPSTREAM = {"apiVersion": "propylon.dev/v1", "kind": "Upstream",
                 "metadata": {"name": "shop", "namespace": "shop"},
                 "spec": {"endpoints": [{"address": "127.0.0.1", "port": 9000}]}}


def test_ingress_tls_certificates_join_the_selecting_gateways_https_listener() -> None:
    result = translated(ingress_gateway(), SHOP_UPSTREAM,
                        ingress({"hosts": ["shop.test"], "secretName": "shop-tls"}),
                        tls_secret("shop-tls", "shop", A))
    web = listeners(result)["web"]
    assert web.tls is not None
    assert [c.cert_file or c.source for c in web.tls.certificates] == [
        "/default.pem", "Secret shop/shop-tls"]
    assert web.tls.certificates[1].private_key == A.key_pem.decode()
    assert status(result, "Ingress", "shop/shop").state == "Accepted"
    again = translated(ingress_gateway(), SHOP_UPSTREAM,
                       ingress({"hosts": ["shop.test"], "secretName": "shop-tls"}),
                       tls_secret("shop-tls", "shop", A))
    assert again.snapshot.version == result.snapshot.version


def test_ingress_with_an_unusable_secret_keeps_its_routes() -> None:
    result = translated(ingress_gateway(), SHOP_UPSTREAM,
                        ingress({"hosts": ["shop.test"], "secretName": "shop-tls"}),
                        tls_secret("shop-tls", "shop", A, data=_other_key()))
    assert [c.cert_file for c in listeners(result)["web"].tls.certificates] == [  # type: ignore[union-attr]
        "/default.pem"]
    assert any(r.route == "Route shop/ingress:shop" for r in result.snapshot.gateways[0].rules)
    reasons = status(result, "Ingress", "shop/shop").reasons
    assert any("ResolvedRefs=False InvalidCertificateRef: Secret shop/shop-tls: tls.key" in r
               for r in reasons), reasons
    assert any("spec.tls[0].secretName" in str(i) for i in result.issues)
    assert_no_key(shown(result), A, B)


def test_ingress_tls_without_an_https_gateway_is_a_warning() -> None:
    result = translated(ingress_gateway("HTTP"), SHOP_UPSTREAM,
                        ingress({"hosts": ["shop.test"], "secretName": "shop-tls"}),
                        tls_secret("shop-tls", "shop", A))
    assert any("no Gateway that selects its Routes has an HTTPS listener" in str(i)
               for i in result.issues)
    assert status(result, "Ingress", "shop/shop").state == "Accepted"


# -- shown objects and private files ---------------------------------------------------------
def test_a_secret_object_is_redacted_wherever_it_is_shown() -> None:
    shown_secret = redact(tls_secret("cert", "infra", A))
    assert shown_secret["data"] == {"tls.crt": REDACTED, "tls.key": REDACTED}
    assert shown_secret["metadata"]["name"] == "cert"


def test_pem_files_are_private_and_gone_after_loading(tmp_path: Path) -> None:
    with pem_files.pem_files(A.cert_pem.decode(), A.key_pem.decode(), str(tmp_path)) as (
            cert_file, key_file):
        directory = os.path.dirname(cert_file)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(cert_file).st_mode) == 0o600
        assert Path(key_file).read_bytes() == A.key_pem
    assert not os.path.exists(directory) and list(tmp_path.iterdir()) == []


def test_server_tls_loads_an_inline_certificate() -> None:
    spec = ir.ListenerTLSIR((ir.CertificateIR("", "", A.cert_pem.decode(), A.key_pem.decode(),
                                              "Secret infra/a"),))
    tls = ServerTLS(spec)
    assert [sorted(names.exact) for names in tls.names_of.values()] == [["a.test"]]
    assert tls.reload_if_changed() is False  # nothing on disk to watch
