"""systemd socket activation: listening sockets passed with ``LISTEN_FDS``/``LISTEN_PID``
are served instead of binding (matched by address and port), so the port stays open while
the gateway restarts.

The first test plays a ``.socket`` unit: it holds the socket, runs one gateway on it, stops it,
connects while nothing runs (the kernel queues the connection) and starts another gateway on
the same socket, which answers. The second runs the gateway under systemd's own
``systemd-socket-activate``, which starts it on the first connection.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support import resources as r
from tests.support.client import RawClient, roundtrip
from tests.support.gateway import REPO, Gateway
from tests.support.h1 import Response
from tests.support.net import poll_until
from tests.support.upstream import ScriptedUpstream

# What systemd does before exec: the socket at fd 3, LISTEN_PID naming the process itself.
_AS_SYSTEMD = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); "
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


class ActivatedGateway(Gateway):
    """A gateway given its listening socket the way systemd gives it."""

    def __init__(self, root: Path, config, sock: socket.socket) -> None:  # type: ignore[no-untyped-def]
        self.sock = sock
        super().__init__(root, config, access_log=False)
        self.port = sock.getsockname()[1]
        self.write_config(config)

    def start(self, timeout: float = 30.0) -> Gateway:
        command = [sys.executable, "-c", _AS_SYSTEMD, str(self.sock.fileno()),
                   *self.command()[1:]]
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=stderr,
                                            pass_fds=(self.sock.fileno(),))
        poll_until(self._ready, timeout, interval=0.05, message="gateway /ready")
        self.worker_pids = [w["pid"] for w in self.stats()["workers"]]
        return self


def config(upstream: ScriptedUpstream):  # type: ignore[no-untyped-def]
    return lambda port: r.dump(
        r.gateway(port),  # listens on 127.0.0.1:port, the address systemd's socket has
        r.route("all", rules=[r.rule(forward=r.forward("app"))]),
        r.upstream("app", upstream.port),
    )


def test_restart_keeps_the_port_and_queued_connections(tmp_path: Path, upstreams) -> None:
    upstream = upstreams("app")
    unit_socket = socket.create_server(("127.0.0.1", 0), backlog=128)  # the .socket unit
    try:
        first = ActivatedGateway(tmp_path / "a", config(upstream), unit_socket).start()
        try:
            assert roundtrip(first.port, "GET", "/one").status == 200
        finally:
            assert first.stop() == 0
        waiting = RawClient(first.port, timeout=30)  # accepted by the kernel, nobody serving
        waiting.request("GET", "/queued", host="activated.test")
        second = ActivatedGateway(tmp_path / "b", config(upstream), unit_socket)
        try:
            second.start()
            answer = waiting.read_final()
            print(f"\nsocket activation: request queued while stopped answered {answer.status} "
                  f"by the restarted gateway (pid {second.pid})")
            assert answer.status == 200
            assert "Address already in use" not in second.stderr_text()
        finally:
            waiting.close()
            second.stop()
    finally:
        unit_socket.close()
    assert [q.path for q in upstream.requests] == ["/one", "/queued"]


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed")
def test_started_by_systemd_socket_activate_on_first_connection(tmp_path: Path,
                                                                upstreams) -> None:
    upstream = upstreams("app")
    gw = Gateway(tmp_path, config(upstream), access_log=False)
    command = ["systemd-socket-activate", "-l", f"127.0.0.1:{gw.port}", *gw.command()]
    with open(gw.stderr_path, "wb") as stderr:
        gw.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=stderr)
    answers: list[Response] = []
    try:
        poll_until(lambda: "Listening on" in gw.stderr_text(), 10, message="socket listening")
        first = threading.Thread(target=lambda: answers.append(
            roundtrip(gw.port, "GET", "/first", timeout=30)), daemon=True)
        first.start()  # this connection starts the gateway
        first.join(40)
        assert [a.status for a in answers] == [200], gw.stderr_text()
        assert "cannot listen" not in gw.stderr_text()
    finally:
        gw.stop()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_socket_unit_verifies(tmp_path: Path) -> None:
    deploy = REPO / "deploy" / "systemd"
    for name in ("propylon.service", "propylon.socket"):
        text = (deploy / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/propylon/bin", str(REPO / ".venv/bin")))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "propylon.socket")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
