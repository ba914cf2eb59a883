"""Fixtures: processes stopped at teardown, a control plane on SQLite, echo upstreams,
proxies of one Gateway each."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.controlplane.helpers import (
    Processes,
    free_port,
    http,
    path_of,
    wait_until,
)


@dataclass
class ControlPlane:
    url: str
    token: str
    token_file: Path

    def put(self, resource: dict[str, Any]) -> tuple[int, Any]:
        return http("PUT", self.url + path_of(resource), resource, self.token)

    def must_put(self, resource: dict[str, Any]) -> dict[str, Any]:
        status, body = self.put(resource)
        assert status in (200, 201), body
        return body  # type: ignore[no-any-return]

    def get(self, path: str) -> tuple[int, Any]:
        return http("GET", self.url + path, token=self.token)


@dataclass
class Cluster:
    """Everything one test started."""

    procs: Processes
    tmp: Path
    planes: list[ControlPlane] = field(default_factory=list)

    def control(self, name: str = "control", store: str | None = None,
                port: int | None = None, extra: tuple[str, ...] = ()) -> ControlPlane:
        port = port or free_port()
        token_file = self.tmp / "token"
        self.procs.start(name, "propylon", "control", "--listen", f"127.0.0.1:{port}",
                         "--store", store or f"sqlite:///{self.tmp / 'control.db'}",
                         "--token-file", str(token_file), "--log-level", "warning", *extra)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: token_file.exists() and http("GET", url + "/v1/status")[0] == 401,
                   what=f"{name} to listen")
        plane = ControlPlane(url, token_file.read_text().strip(), token_file)
        self.planes.append(plane)
        return plane

    def echo(self, name: str) -> int:
        port = free_port()
        self.procs.start(f"echo-{name}", "propylon.demo.echo_server", "--port", str(port),
                         "--name", name)
        wait_until(lambda: _listening(port), what=f"echo {name}")
        return port

    def proxy(self, name: str, plane: ControlPlane | str, gateway: str,
              cache: str = "cache", log_level: str = "warning",
              health_interval: float | None = None) -> int:
        admin = free_port()
        url = plane if isinstance(plane, str) else plane.url
        interval = ("--health-interval", str(health_interval)) if health_interval else ()
        self.procs.start(name, "propylon", "proxy", "--control", url, "--gateway", gateway,
                         "--token-file", str(self.tmp / "token"),
                         "--cache-dir", str(self.tmp / cache), "--admin", f"127.0.0.1:{admin}",
                         "--access-log", "off", "--log-level", log_level, *interval)
        return admin


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _cluster(tmp: Path) -> Iterator[Cluster]:
    procs = Processes(tmp)
    try:
        yield Cluster(procs, tmp)
    finally:
        procs.stop_all()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from _cluster(tmp_path)


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Processes shared by a module's tests (for the ones that do not change what they see)."""
    yield from _cluster(tmp_path_factory.mktemp("cluster"))
