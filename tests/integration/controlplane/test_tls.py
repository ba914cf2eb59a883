"""The control plane over HTTPS: clients and proxies verify it with a CA file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trustme

from tests.integration.controlplane.conftest import Cluster
from tests.integration.controlplane.helpers import free_port, gateway, wait_until


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "propylon", *args], capture_output=True,
                          text=True, timeout=30)


def test_https_control_plane_with_client_and_proxy(cluster: Cluster, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cp.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "cp.key"))
    port, token_file = free_port(), tmp_path / "token"
    cluster.procs.start("control-tls", "propylon", "control", "--listen", f"127.0.0.1:{port}",
                        "--store", f"sqlite:///{tmp_path / 'cp.db'}",
                        "--token-file", str(token_file), "--log-level", "warning",
                        "--tls-cert", str(tmp_path / "cp.pem"),
                        "--tls-key", str(tmp_path / "cp.key"))
    url = f"https://127.0.0.1:{port}"
    common = ["--control", url, "--token-file", str(token_file)]
    wait_until(lambda: token_file.exists() and _cli("status", *common, "--ca-file",
                                                    str(tmp_path / "ca.pem")).returncode == 0,
               timeout=20.0, what="the https control plane")

    untrusted = _cli("status", *common)  # the test CA is not in the system's trust store
    assert untrusted.returncode != 0

    gw_port = free_port()
    manifest = tmp_path / "gw.yaml"
    import yaml

    manifest.write_text(yaml.safe_dump(gateway("tls", "infra", gw_port, ["infra"])))
    applied = _cli("apply", "-f", str(manifest), *common, "--ca-file", str(tmp_path / "ca.pem"))
    assert applied.returncode == 0, applied.stderr
    listed = _cli("get", "gateway", *common, "--ca-file", str(tmp_path / "ca.pem"))
    assert "tls" in listed.stdout, listed.stdout + listed.stderr

    admin = free_port()
    cluster.procs.start("proxy-tls", "propylon", "proxy", *common, "--gateway", "infra/tls",
                        "--ca-file", str(tmp_path / "ca.pem"),
                        "--cache-dir", str(tmp_path / "cache"), "--admin", f"127.0.0.1:{admin}",
                        "--access-log", "off", "--log-level", "warning")
    wait_until(lambda: "last ACK" in _cli("status", *common, "--ca-file",
                                          str(tmp_path / "ca.pem")).stdout,
               timeout=20.0, what="the proxy to ACK over https")
