"""Real processes on 127.0.0.1 for the control-plane tests: start, poll until, stop by PID."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.net import free_port

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (and return it), or fail."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, AssertionError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def http(method: str, url: str, body: Any = None, token: str | None = None,
         timeout: float = 5.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def served_by(port: int, path: str = "/", host: str = "127.0.0.1") -> tuple[int, Any]:
    """One request through a proxy: (status, the echo service's name or the body)."""
    status, body = http("GET", f"http://{host}:{port}{path}", timeout=3.0)
    return status, body.get("service") if isinstance(body, dict) else body


class Processes:
    """Processes a test started; ``stop_all`` ends each by its PID."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """``python -m ARGS`` with this interpreter."""
        return self.start_command(name, [sys.executable, "-m", *args])

    def start_command(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.running[name] = proc
        return proc

    def stop(self, name: str, kill: bool = False) -> None:
        proc = self.running.pop(name)
        if proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):  # newest first: proxies before planes
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


ETCD = shutil.which("etcd")


def start_etcd(procs: Processes, tmp: Path) -> str:
    """A one-member etcd (Debian's ``etcd-server``) on free ports; its store URL."""
    client, peer = free_port(), free_port()
    assert ETCD is not None
    procs.start_command("etcd", [
        ETCD, "--data-dir", str(tmp / "etcd"), "--name", "test",
        "--listen-client-urls", f"http://127.0.0.1:{client}",
        "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"test=http://127.0.0.1:{peer}"])
    wait_until(lambda: http("GET", f"http://127.0.0.1:{client}/health")[0] == 200,
               what="etcd to be healthy")
    return f"etcd://127.0.0.1:{client}"


def gateway(name: str, namespace: str, port: int, namespaces: list[str]) -> dict[str, Any]:
    return {"apiVersion": "propylon.dev/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"listeners": [{"name": "web", "port": port, "address": "127.0.0.1"}],
                     "routeSelector": {"namespaces": namespaces}}}


def upstream(name: str, namespace: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "propylon.dev/v1", "kind": "Upstream",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"endpoints": [{"address": "127.0.0.1", "port": port}]}}


def route(name: str, namespace: str, prefix: str, upstream_name: str,
          labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "propylon.dev/v1", "kind": "Route",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"rules": [{"matches": [{"path": {"prefix": prefix}}],
                                "forward": {"backends": [{"upstream": upstream_name}]}}]}}


def path_of(resource: dict[str, Any]) -> str:
    meta = resource["metadata"]
    return f"/v1/resources/{resource['kind'].lower()}/{meta['namespace']}/{meta['name']}"
