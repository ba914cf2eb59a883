"""examples/grpc as its README runs it: the example's service, the example's gateway config
(ports moved to free ones), and the example's client making the four calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.gateway import Gateway
from tests.support.net import free_port, poll_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grpc"


def test_grpc_example(tmp_path: Path) -> None:
    service_port = free_port()
    for name in ("echo_server.py", "echo.proto"):
        (tmp_path / name).write_text((EXAMPLE / name).read_text())
    server = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.argv=['x', 'serve']; "
         f"sys.path.insert(0, {str(tmp_path)!r}); import echo_server; "
         f"echo_server.serve('127.0.0.1:{service_port}')"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        config = (EXAMPLE / "gateway.yaml").read_text()

        def render(port: int) -> str:
            return config.replace("port: 8090", f"port: {port}").replace(
                "port: 50051", f"port: {service_port}")
        gw = Gateway(tmp_path / "gw", render).start()
        try:
            def calls() -> subprocess.CompletedProcess[str] | None:
                out = subprocess.run([sys.executable, str(tmp_path / "echo_server.py"), "call",
                                      f"127.0.0.1:{gw.port}"], capture_output=True, text=True,
                                     timeout=60, cwd=tmp_path)
                return out if out.returncode == 0 else None
            out = poll_until(calls, timeout=30)
            assert 'text: "HELLO"' in out.stdout
            assert "server stream: ['n-0', 'n-1', 'n-2']" in out.stdout
            assert 'text: "abc"' in out.stdout
            assert "bidi: ['eno', 'owt']" in out.stdout
        finally:
            gw.stop()
    finally:
        server.terminate()
        server.wait(timeout=10)
