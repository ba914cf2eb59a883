"""An HTTPS listener whose certificate is a ``kubernetes.io/tls`` Secret, through a real control
plane and proxy: the PEM travels in that Gateway's shard only, the proxy serves it (and a
renewed one), and no answer, log or cache shows the key to anyone else."""

from __future__ import annotations

import json
import stat
from typing import Any

from tests.integration.controlplane.conftest import Cluster
from tests.integration.controlplane.helpers import free_port, http, wait_until
from tests.support.k8s_tls import https_get, self_signed, served_certificate, tls_secret


def objects(port: int, other_port: int, echo_port: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "edge", "namespace": "infra"},
         "spec": {"gatewayClassName": "propylon",
                  "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                  "listeners": [{"name": "https", "port": port, "protocol": "HTTPS",
                                 "tls": {"certificateRefs": [
                                     {"name": "shop-tls", "namespace": "certs"}]},
                                 "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "other", "namespace": "infra"},
         "spec": {"gatewayClassName": "propylon",
                  "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                  "listeners": [{"name": "http", "port": other_port, "protocol": "HTTP"}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
         "metadata": {"name": "edge-certs", "namespace": "certs"},
         "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                            "namespace": "infra"}],
                  "to": [{"group": "", "kind": "Secret"}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"parentRefs": [{"name": "edge", "namespace": "infra"}],
                  "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": echo_port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "shop-1", "namespace": "shop",
                      "labels": {"kubernetes.io/service-name": "shop"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": echo_port}],
         "endpoints": [{"addresses": ["127.0.0.1"]}]},
    ]


def test_proxy_serves_a_secret_certificate_from_its_shard_only(cluster: Cluster) -> None:
    plane = cluster.control()
    echo = cluster.echo("shop")
    port, other_port = free_port(), free_port()
    cert = self_signed("shop.test")
    for doc in [*objects(port, other_port, echo), tls_secret("shop-tls", "certs", cert)]:
        plane.must_put(doc)
    admin = cluster.proxy("proxy", plane, "infra/edge")
    wait_until(lambda: served_certificate(port, "shop.test") == cert.der, timeout=30.0,
               what="the Secret's certificate")
    status, body = https_get(port, "shop.test", "/cart")
    assert status == 200 and json.loads(body)["service"] == "shop"

    key_line = cert.key_pem.decode().splitlines()[1]
    # the PEM is in the edge Gateway's shard, not in another Gateway's
    status, edge_ir = http("GET", plane.url + "/v1/gateways/infra/edge/ir?schemas=2,3",
                           token=plane.token)
    assert status == 200 and "PRIVATE KEY" in json.dumps(edge_ir)
    status, other_ir = http("GET", plane.url + "/v1/gateways/infra/other/ir?schemas=2,3",
                           token=plane.token)
    assert status == 200 and "PRIVATE KEY" not in json.dumps(other_ir)
    # what is shown: the Secret redacted, statuses, the proxy's /config
    status, shown = plane.get("/v1/resources/secret/certs/shop-tls")
    assert status == 200 and shown["data"] == {"tls.crt": "<redacted>", "tls.key": "<redacted>"}
    status, listed = plane.get("/v1/resources/secret")
    assert status == 200 and key_line not in json.dumps(listed)
    assert "PRIVATE KEY" not in json.dumps(plane.get("/v1/status")[1])
    status, config = http("GET", f"http://127.0.0.1:{admin}/config")
    text = json.dumps(config)
    assert status == 200 and "PRIVATE KEY" not in text and "<redacted>" in text
    # the proxy's cached IR holds the key: only its user may read it (written a second
    # after the version is installed: ir_cache.LatestSave)
    cached = wait_until(lambda: next((cluster.tmp / "cache").glob("*.json"), None),
                        what="the IR cached")
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600

    renewed = self_signed("shop.test")
    put_answer = plane.must_put(tls_secret("shop-tls", "certs", renewed))
    assert put_answer["data"]["tls.key"] == "<redacted>"
    wait_until(lambda: served_certificate(port, "shop.test") == renewed.der, timeout=30.0,
               what="the renewed certificate")
    for name in ("proxy", "control"):
        log = cluster.procs.log(name)
        assert key_line not in log and renewed.key_pem.decode().splitlines()[1] not in log
