"""Binary upgrade on SIGUSR2 under steady load: keep-alive clients, a new connection per
request, a slow 48 MiB download and an open WebSocket, with zero failed requests; and an
upgrade whose new process cannot load its configuration, with zero failed requests and the old
process still serving.

A keep-alive request that finds its idle connection closed before any byte of an answer is
sent again on a new connection, as HTTP clients do for idempotent requests (RFC 9112
§9.3.1): the old workers close idle keep-alive connections when they drain, and the client
may have written its next request just before. Those resends are counted and printed; a
request whose answer was cut, a refused connection or a 5xx is a failure.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.integration.edge.test_websocket import EchoServer
from tests.support import resources as r
from tests.support.client import ConnectionClosed, RawClient
from tests.support.gateway import Gateway
from tests.support.net import poll_until
from tests.support.processes import SUCCESSOR_SERVES, pid_alive, stop_pid
from tests.support.upstream import Reply, ScriptedUpstream, pattern_body

DOWNLOAD = 48 * 1024 * 1024
DOWNLOAD_RATE = 12 * 1024 * 1024  # bytes per second the slow client reads
WORKERS = 2


class Traffic:
    """Client threads sending requests until stopped; outcomes counted per kind."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok: Counter[str] = Counter()
        self.failures: list[str] = []
        self.resent = 0
        self.threads: list[threading.Thread] = []

    def start(self, keep_alive: int = 3, fresh: int = 2) -> Traffic:
        for i in range(keep_alive):
            self._thread(self._keep_alive, f"keep-alive-{i}")
        for i in range(fresh):
            self._thread(self._fresh, f"fresh-{i}")
        return self

    def _thread(self, target, name: str) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def total(self) -> int:
        with self.lock:
            return sum(self.ok.values()) + len(self.failures)

    def _count(self, kind: str, error: str = "") -> None:
        with self.lock:
            if error:
                self.failures.append(f"{kind}: {error}")
            else:
                self.ok[kind] += 1

    def _keep_alive(self) -> None:
        client: RawClient | None = None
        while not self.stop.is_set():
            reused = client is not None
            try:
                if client is None:
                    client = RawClient(self.port, timeout=10)
                client.request("GET", "/load", host="upgrade.test")
                response = client.read_final()
            except ConnectionClosed as exc:
                if client is not None:
                    client.close()
                client = None
                if reused and not exc.partial:  # closed while idle: send it again
                    with self.lock:
                        self.resent += 1
                    continue
                self._count("keep-alive", repr(exc))
                continue
            except OSError as exc:
                if client is not None:
                    client.close()
                client = None
                self._count("keep-alive", repr(exc))
                continue
            self._count("keep-alive", "" if response.status == 200 else f"{response.status}")
            if (response.header("connection") or "").lower() == "close":
                client.close()
                client = None
            time.sleep(0.002)
        if client is not None:
            client.close()

    def _fresh(self) -> None:
        while not self.stop.is_set():
            try:
                with RawClient(self.port, timeout=10) as client:
                    client.request("GET", "/load", host="upgrade.test",
                                   headers={"connection": "close"})
                    status = client.read_final().status
            except (OSError, AssertionError) as exc:
                self._count("new-connection", repr(exc))
                continue
            self._count("new-connection", "" if status == 200 else f"{status}")
            time.sleep(0.005)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(20)


class SlowDownload(threading.Thread):
    """One GET of ``DOWNLOAD`` bytes read at ``DOWNLOAD_RATE``, checked byte for byte."""

    def __init__(self, port: int) -> None:
        super().__init__(name="download", daemon=True)
        self.port = port
        self.error = ""
        self.received = 0
        self.digest = ""

    def run(self) -> None:
        try:
            with RawClient(self.port, timeout=20) as client:
                client.request("GET", "/download", host="upgrade.test")
                deadline = time.monotonic() + 60
                head = client.read_until(b"\r\n\r\n", deadline)
                assert b" 200 " in head.split(b"\r\n")[0], head[:200]
                sha = hashlib.sha256()
                started = time.monotonic()
                while self.received < DOWNLOAD:
                    piece = client.read_exact(min(256 * 1024, DOWNLOAD - self.received),
                                              deadline)
                    sha.update(piece)
                    self.received += len(piece)
                    ahead = self.received / DOWNLOAD_RATE - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                self.digest = sha.hexdigest()
        except Exception as exc:  # reported by the test
            self.error = repr(exc)


class WebSocketChat(threading.Thread):
    """A WebSocket opened before the upgrade, echoing a message every 20 ms until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(name="websocket", daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.opened = threading.Event()
        self.echoed = 0
        self.error = ""

    def run(self) -> None:
        try:
            with connect(f"ws://127.0.0.1:{self.port}/chat", open_timeout=5, close_timeout=5,
                         ping_interval=None) as ws:
                self.opened.set()
                while not self.stop.is_set():
                    message = f"message {self.echoed}"
                    ws.send(message)
                    assert ws.recv(timeout=5) == message
                    self.echoed += 1
                    time.sleep(0.02)
        except Exception as exc:  # reported by the test
            self.error = repr(exc)
            self.opened.set()


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer().start()
    yield server
    server.stop()


def gateway_config(upstream: ScriptedUpstream, echo: EchoServer):  # type: ignore[no-untyped-def]
    return lambda port: r.dump(
        r.gateway(port),
        r.route("upgrade", rules=[
            r.rule({"prefix": "/chat"}, name="chat", forward=r.forward("echo")),
            r.rule(name="http", forward=r.forward("app")),
        ]),
        r.upstream("app", upstream.port),
        r.upstream("echo", echo.port),
    )


@pytest.fixture
def gateway(tmp_path: Path, upstreams, echo: EchoServer) -> Iterator[Gateway]:
    upstream: ScriptedUpstream = upstreams("app")
    big = Reply(body_size=DOWNLOAD, headers=[("content-type", "application/octet-stream")])
    upstream.handler = lambda request: big if request.path == "/download" else upstream.echo(
        request)
    gw = Gateway(tmp_path / "gw", gateway_config(upstream, echo), workers=WORKERS,
                 drain_timeout=20, access_log=False).start()
    successors: list[int] = []
    gw.successors = successors  # type: ignore[attr-defined]
    yield gw
    gw.stop()
    for pid in successors:  # started by the gateway on our SIGUSR2: stopped here by PID
        stop_pid(pid)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def successor_pid(gw: Gateway) -> int | None:
    found = SUCCESSOR_SERVES.search(gw.stderr_text())
    return int(found.group(1)) if found else None


def test_upgrade_under_load_loses_no_request(gateway: Gateway) -> None:
    gw = gateway
    old_pid, old_workers = gw.pid, set(gw.worker_pids)
    traffic = Traffic(gw.port).start()
    download = SlowDownload(gw.port)
    chat = WebSocketChat(gw.port)
    try:
        chat.start()
        assert chat.opened.wait(10) and not chat.error, chat.error
        download.start()
        poll_until(lambda: traffic.total() >= 200 and download.received > 4 * 1024 * 1024,
                   20, message="traffic flowing")
        before = traffic.total()
        started = time.monotonic()
        gw.signal(signal.SIGUSR2)
        new_pid = poll_until(lambda: successor_pid(gw), 60, interval=0.05,
                             message="the new process serving")
        gw.successors.append(new_pid)  # type: ignore[attr-defined]
        ready_after = time.monotonic() - started
        at_ready = traffic.total()
        time.sleep(0.5)
        chat.stop.set()  # the tunnel closes at its own pace, inside the drain grace
        chat.join(10)
        download.join(60)
        assert gw.process is not None
        gw.process.wait(30)  # the old process drained and left
        drained_after = time.monotonic() - started
        poll_until(lambda: traffic.total() >= at_ready + 300, 20,
                   message="traffic served by the new process")
    finally:
        traffic.finish()
        chat.stop.set()
    workers = gw.stats()["workers"]
    new_workers = {w["pid"] for w in workers}
    print(f"\nbinary upgrade under load: {traffic.total()} requests "
          f"({dict(traffic.ok)}), {len(traffic.failures)} failed, {traffic.resent} "
          f"keep-alive request(s) resent after an idle close; {before} before SIGUSR2, "
          f"{at_ready - before} while the new process started ({ready_after:.2f}s), "
          f"{traffic.total() - at_ready} after; old pid {old_pid} exited "
          f"{gw.process.returncode} after {drained_after:.2f}s, new pid {new_pid}; "
          f"download {download.received} bytes, WebSocket {chat.echoed} echoes")
    assert traffic.failures == [], traffic.failures[:10]
    assert download.error == "" and download.received == DOWNLOAD, download.error
    assert download.digest == hashlib.sha256(pattern_body(DOWNLOAD)).hexdigest()
    assert chat.error == "" and chat.echoed > 0, chat.error
    assert gw.process.returncode == 0
    assert pid_alive(new_pid) and new_pid != old_pid
    assert len(workers) == WORKERS and not new_workers & old_workers
    assert all(parent_of(pid) == new_pid for pid in new_workers)
    with connect(f"ws://127.0.0.1:{gw.port}/chat", open_timeout=5) as ws:
        ws.send("after the upgrade")
        assert ws.recv(timeout=5) == "after the upgrade"


def test_failed_upgrade_keeps_the_old_process_serving(gateway: Gateway) -> None:
    gw = gateway
    old_workers = set(gw.worker_pids)
    traffic = Traffic(gw.port).start()
    try:
        poll_until(lambda: traffic.total() >= 200, 20, message="traffic flowing")
        gw.write_config("kind: Gateway\nmetadata: {name: broken\n")  # not YAML: refused
        before = traffic.total()
        gw.signal(signal.SIGUSR2)
        poll_until(lambda: "binary upgrade failed" in gw.stderr_text(), 60, interval=0.05,
                   message="the failed upgrade logged")
        failed_at = traffic.total()
        poll_until(lambda: traffic.total() >= failed_at + 300, 20,
                   message="traffic after the failed upgrade")
    finally:
        traffic.finish()
    log_line = next(line for line in gw.stderr_text().splitlines()
                    if "binary upgrade failed" in line)
    print(f"\nfailed binary upgrade: {traffic.total()} requests ({dict(traffic.ok)}), "
          f"{len(traffic.failures)} failed, {traffic.resent} resent; {before} before SIGUSR2, "
          f"{failed_at - before} while the new process tried, {traffic.total() - failed_at} "
          f"after; logged: {log_line.strip()}")
    assert traffic.failures == [], traffic.failures[:10]
    assert gw.process is not None and gw.process.poll() is None
    assert {w["pid"] for w in gw.stats()["workers"]} == old_workers
    assert "exited with 1 before it was ready" in log_line
    assert "configuration refused" in gw.stderr_text()
