"""Helpers for the policy integration tests: ports, polling, real processes stopped by PID.

Every process is started by these helpers and stopped through its own PID (SIGTERM, then
SIGKILL); nothing is found by name.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.net import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]



# The YAML every policy test starts from: a Gateway "edge" on $PORT and an Upstream "echo" on
# UPSTREAM (both placeholders are filled by the tests). ``EDGE_AND_ECHO`` ends with a document
# separator, so a test appends its Routes (and Consumers) to it.
EDGE_GATEWAY = """apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge}
spec:
  listeners: [{name: web, port: $PORT, address: 127.0.0.1}]
"""
ECHO_UPSTREAM = """apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: echo}
spec:
  endpoints: [{address: 127.0.0.1, port: UPSTREAM}]
"""
EDGE_AND_ECHO = EDGE_GATEWAY + "---\n" + ECHO_UPSTREAM + "---\n"

def poll_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # not ready yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last!r})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """A real ``redis-server`` (Debian package) on a free loopback port, no persistence,
    stopped through its own PID; ``options`` are more of its command-line options (e.g.
    ``--requirepass PW``). ``pause``/``resume`` send SIGSTOP/SIGCONT: a hung server, whose
    kernel still accepts connections but which never answers."""

    def __init__(self, workdir: Path, *options: str) -> None:
        server = shutil.which("redis-server")
        assert server is not None, "redis-server is missing (Debian package redis-server)"
        self.port = free_port()
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        poll_until(lambda: port_open(self.port))

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()  # a stopped process would only see SIGTERM after SIGCONT
        stop(self.proc)


class Upstream:
    """The echo upstream in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_echo_upstream.py"), str(self.port)])
        poll_until(lambda: port_open(self.port))

    def stop(self) -> None:
        stop(self.proc)


class GatewayProc:
    """``python -m propylon run DIR`` on free ports; ``files`` are written into DIR first."""

    def __init__(self, root: Path, config: str, *, workers: int = 1,
                 files: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 port: int | None = None, wait: bool = True) -> None:
        self.dir = root
        root.mkdir(parents=True, exist_ok=True)
        for name, text in (files or {}).items():
            (root / name).write_text(text)
        self.port = port or free_port()
        self.admin = free_port()
        (root / "gateway.yaml").write_text(config.replace("$PORT", str(self.port)))
        self.log = open(root / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "propylon", "run", str(root), "--admin",
             f"127.0.0.1:{self.admin}", "--access-log", "off", "--no-watch",
             "--workers", str(workers)],
            cwd=root, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Until /ready answers 200 (with ``wait=False``, the caller calls this: gateways
        started together start faster)."""
        try:
            poll_until(self.ready, timeout=20)
        except AssertionError:
            self.stop()
            raise AssertionError((self.dir / "gateway.log").read_text()) from None

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("gateway exited")
        status, _, _ = request(self.admin, "GET", "/ready")
        return status == 200 and port_open(self.port)

    def config(self) -> Any:
        return json.loads(request(self.admin, "GET", "/config")[2])

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None, timeout: float = 5.0
            ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def request_fields(port: int, method: str, path: str, fields: list[tuple[str, str]],
                   timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Like ``request``, with header fields as a list: a name may be given more than once."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path)
        for name, value in fields:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def echoed(body: bytes) -> dict[str, Any]:
    """The echo upstream's view: {"target", "headers": {name: value}}."""
    data = json.loads(body)
    data["headers"] = {n: v for n, v in data["headers"]}
    return data


def gateway_yaml(policies: str, upstream_port: int, extra: str = "",
                 rule_policies: str = "") -> str:
    """A Gateway on $PORT with Gateway-level ``policies`` and one Route to the echo upstream."""
    return f"""apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  listeners: [{{name: web, port: $PORT, address: 127.0.0.1}}]
  policies:
{policies or "    []"}
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: echo}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {upstream_port}}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: api}}
spec:
  rules:
    - matches: [{{path: {{prefix: /open}}}}]
      forward: {{backends: [{{upstream: echo}}]}}
{rule_policies}
    - forward: {{backends: [{{upstream: echo}}]}}
{extra}"""
