"""HTTPS from ``kubernetes.io/tls`` Secrets through a real gateway (``propylon run``): a
Gateway API Gateway's HTTPS listeners (SNI picks the Secret's certificate, a changed Secret is
served after the reload, a listener whose Secret is unusable is left out while the others
serve) and an Ingress's ``spec.tls`` on a propylon.dev/v1 Gateway's HTTPS listener."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.gateway import REPO
from tests.support.k8s_tls import SelfSigned, https_get, self_signed, served_certificate, tls_secret
from tests.support.net import free_port, poll_until
from tests.support.upstream import ScriptedUpstream


def gateway_api(port: int, http_port: int, broken_port: int,
                upstream_port: int) -> list[dict[str, Any]]:
    def https(name: str, listener_port: int, hostname: str, secret: str) -> dict[str, Any]:
        return {"name": name, "port": listener_port, "protocol": "HTTPS", "hostname": hostname,
                "tls": {"certificateRefs": [{"name": secret}]},
                "allowedRoutes": {"namespaces": {"from": "All"}}}

    return [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "edge", "namespace": "infra"},
         "spec": {"gatewayClassName": "propylon",
                  "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                  "listeners": [
                      https("a", port, "a.test", "a-tls"),
                      https("b", port, "b.test", "b-tls"),
                      https("broken", broken_port, "c.test", "missing-tls"),
                      {"name": "http", "port": http_port, "protocol": "HTTP",
                       "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"parentRefs": [{"name": "edge", "namespace": "infra"}],
                  "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}]}},
        {"apiVersion": "propylon.dev/v1", "kind": "Upstream",
         "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"endpoints": [{"address": "127.0.0.1", "port": upstream_port}]}},
    ]


def secrets(a: SelfSigned, b: SelfSigned) -> list[dict[str, Any]]:
    return [tls_secret("a-tls", "infra", a), tls_secret("b-tls", "infra", b, string_data=True)]


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs)


def test_gateway_api_https_listeners_serve_their_secrets(gateways, upstreams) -> None:
    upstream = upstreams("shop")
    http_port, broken_port = free_port(), free_port()
    a, b = self_signed("a.test"), self_signed("b.test")
    gateway = gateways(lambda port: dump(gateway_api(port, http_port, broken_port, upstream.port)
                                         + secrets(a, b)), watch=True)
    assert served_certificate(gateway.port, "a.test") == a.der
    assert served_certificate(gateway.port, "b.test") == b.der
    assert https_get(gateway.port, "a.test", "/x")[0] == 200
    assert upstream.last.target == "/x"
    # the listener whose Secret is missing is not served; the HTTP one is
    status, _ = _plain_get(http_port)
    assert status == 200
    try:
        served_certificate(broken_port, "c.test", timeout=1.0)
        raise AssertionError("a listener without a usable certificate was served")
    except OSError:
        pass
    # nothing secret where the gateway shows its configuration or logs
    code, config = gateway.admin_get("/config")
    assert code == 200 and b"PRIVATE KEY" not in config and b"<redacted>" in config
    assert a.cert_pem.decode().splitlines()[1].encode() in config.replace(b"\\n", b"\n")
    for cert in (a, b):
        assert cert.key_pem.decode().splitlines()[1] not in gateway.stderr_text()
    # a new certificate in the Secret is served after the reload
    renewed = self_signed("a.test")
    gateway.write_config(dump(gateway_api(gateway.port, http_port, broken_port, upstream.port)
                              + secrets(renewed, b)))
    poll_until(lambda: served_certificate(gateway.port, "a.test") == renewed.der, 15.0,
               message="the renewed certificate")
    assert served_certificate(gateway.port, "b.test") == b.der


def _plain_get(port: int) -> tuple[int, bytes]:
    from tests.support.client import roundtrip

    response = roundtrip(port, "GET", "/plain", {"host": "a.test"})
    return response.status, response.body


def test_validate_reports_an_unusable_secret_at_its_reference(tmp_path: Path) -> None:
    a = self_signed("a.test")
    docs = gateway_api(free_port(), free_port(), free_port(), 9)
    docs.append(tls_secret("a-tls", "infra", a))
    docs.append(tls_secret("b-tls", "infra", self_signed("b.test"), type="Opaque"))
    config = tmp_path / "k8s.yaml"
    config.write_text(dump(docs))
    result = subprocess.run([sys.executable, "-m", "propylon", "validate", str(config),
                             "-o", "json"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    out = result.stdout + result.stderr
    report = json.loads(result.stdout)
    text = json.dumps(report)
    assert "ResolvedRefs=False InvalidCertificateRef: Secret infra/b-tls: type is 'Opaque'" \
        in text, out
    assert "Secret infra/missing-tls not found" in text
    assert "PRIVATE KEY" not in out and a.key_pem.decode().splitlines()[1] not in out


def ingress_config(port: int, default: tuple[Path, Path], upstream: ScriptedUpstream,
                   shop: SelfSigned) -> str:
    return dump([
        {"apiVersion": "propylon.dev/v1", "kind": "Gateway",
         "metadata": {"name": "ingress", "namespace": "infra"},
         "spec": {"listeners": [{"name": "web", "port": port, "protocol": "HTTPS",
                                 "address": "127.0.0.1",
                                 "tls": {"certificates": [{"certFile": str(default[0]),
                                                           "keyFile": str(default[1])}]}}],
                  "routeSelector": {"namespaces": ["*"],
                                    "matchLabels": {"propylon.dev/ingress-class": "propylon"}}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"ingressClassName": "propylon",
                  "tls": [{"hosts": ["shop.test"], "secretName": "shop-tls"}],
                  "rules": [{"host": "shop.test", "http": {"paths": [
                      {"path": "/", "pathType": "Prefix",
                       "backend": {"service": {"name": "shop", "port": {"number": 80}}}}]}}]}},
        {"apiVersion": "propylon.dev/v1", "kind": "Upstream",
         "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"endpoints": [{"address": "127.0.0.1", "port": upstream.port}]}},
        tls_secret("shop-tls", "shop", shop),
    ])


def test_ingress_tls_secret_is_served_by_sni(gateways, upstreams, tmp_path: Path) -> None:
    upstream = upstreams("shop")
    default, shop = self_signed("default.test"), self_signed("shop.test")
    files = (tmp_path / "default.pem", tmp_path / "default.key")
    files[0].write_bytes(default.cert_pem)
    files[1].write_bytes(default.key_pem)
    gateway = gateways(lambda port: ingress_config(port, files, upstream, shop))
    assert served_certificate(gateway.port, "shop.test") == shop.der
    assert served_certificate(gateway.port, "other.test") == default.der
    assert https_get(gateway.port, "shop.test", "/cart")[0] == 200
    assert upstream.last.target == "/cart"
