"""Process behaviour: several workers sharing the listener, and draining on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from propylon.standalone import PREVIEW_MIN_ROUTES
from tests.support import resources as r
from tests.support.client import RawClient, roundtrip
from tests.support.gateway import Gateway, metric_value
from tests.support.net import poll_until, port_refuses
from tests.support.upstream import Reply, ScriptedUpstream


def _config(up: ScriptedUpstream) -> Callable[[int], str]:
    return lambda port: r.dump(
        r.gateway(port),
        r.route("main", rules=[
            r.rule({"prefix": "/counted"}, name="counted", forward=r.forward("up")),
            r.rule(forward=r.forward("up")),
        ]),
        r.upstream("up", up.port),
    )


def _established_inodes(local_port: int) -> dict[int, str]:
    """Remote port -> socket inode of the established sockets on 127.0.0.1:``local_port``."""
    local = f"0100007F:{local_port:04X}"
    out = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "01":
            out[int(fields[2].rsplit(":", 1)[1], 16)] = fields[9]
    return out


def _socket_owners(pids: list[int]) -> dict[str, int]:
    """Socket inode -> the PID (of ``pids``) holding it."""
    owners = {}
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[target[8:-1]] = pid
    return owners


def test_two_workers_share_the_listener_and_metrics_add_up(gateways, upstreams) -> None:
    up = upstreams("workers")
    gw = gateways(_config(up), workers=2)
    pids = gw.worker_pids
    assert len(set(pids)) == 2
    clients = [RawClient(gw.port) for _ in range(40)]  # SO_REUSEPORT spreads them
    try:
        for client in clients:
            client.request("GET", "/spread")
            assert client.read_final().status == 200
        # Which worker accepted each connection: the one holding its socket.
        inodes = _established_inodes(gw.port)
        holders = _socket_owners(pids)
        owners = Counter(holders.get(inodes.get(c.local_port, ""), 0) for c in clients)
    finally:
        for client in clients:
            client.close()
    assert set(owners) == set(pids), f"connections per worker: {dict(owners)}"

    n = 60
    for i in range(n):
        assert roundtrip(gw.port, "GET", f"/counted/{i}").status == 200
    text = gw.metrics()
    counted = metric_value(text, "propylon_requests_total", route="default/main",
                           rule="counted", code="2xx")
    assert counted == n
    assert metric_value(text, "propylon_workers") == 2


def test_sigterm_drains_the_in_flight_request_then_exits_0(gateways, upstreams) -> None:
    up = upstreams("drain")
    gw: Gateway = gateways(_config(up), drain_timeout=8.0)
    idle = RawClient(gw.port, timeout=15)
    idle.request("GET", "/idle")
    assert idle.read_final().status == 200  # an idle keep-alive connection from now on
    up.reset(lambda _q: Reply(body=b"finished", delay=1.0))
    with RawClient(gw.port, timeout=15) as client, idle:
        client.request("GET", "/in-flight")
        up.wait_for_requests(1)
        started = time.monotonic()
        gw.signal(signal.SIGTERM)
        poll_until(lambda: port_refuses(gw.port), 3, message="new connections refused")
        refused_after = time.monotonic() - started
        assert idle.closed_by_peer(timeout=2), "idle connections are closed when draining"
        response = client.read_final()
    assert response.status == 200
    assert response.body == b"finished"
    assert refused_after < 2.0, "the listener stayed open while draining"
    assert gw.process is not None
    code = gw.process.wait(timeout=gw.drain_timeout + 5)
    assert code == 0
    assert time.monotonic() - started < gw.drain_timeout


def test_a_connection_accepted_before_draining_gets_its_request_answered(gateways,
                                                                        upstreams) -> None:
    """A client whose connection the worker accepted just before SIGTERM, and whose request
    comes after it, is answered (with Connection: close), not closed unanswered as an idle
    connection is: nothing tells such a client to send its request again."""
    up = upstreams("late-first-request")
    gw: Gateway = gateways(_config(up), drain_timeout=5.0)
    with RawClient(gw.port, timeout=10) as late:
        poll_until(lambda: len(_established_inodes(gw.port)) >= 1, 3,
                   message="the connection accepted")
        time.sleep(0.1)  # the worker has it (accept is immediate; this is margin)
        gw.signal(signal.SIGTERM)
        poll_until(lambda: port_refuses(gw.port), 3, message="new connections refused")
        late.request("GET", "/late")
        response = late.read_final()
    assert response.status == 200
    assert response.header("connection") == "close"
    assert gw.process is not None
    assert gw.process.wait(timeout=gw.drain_timeout + 5) == 0


def _worker_processes(pid: int) -> list[int]:
    """The children of ``pid`` that are worker processes (spawned by multiprocessing)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    return found


def _large_gateway(tmp_path: Path, workers: int) -> Gateway:
    """A gateway of ``PREVIEW_MIN_ROUTES`` + 400 Routes in four files: started, it sends its
    workers a first part to compile while it translates the rest (a start-up that lasts)."""
    count = PREVIEW_MIN_ROUTES + 400
    gateway = Gateway(tmp_path, lambda port: r.dump(r.gateway(port)), workers=workers,
                      log_level="debug")
    for part in range(4):
        gateway.write_config(r.dump(*(
            r.route(f"r{i:05d}", rules=[r.rule({"exact": f"/r{i}"},
                                               directResponse={"status": 200})])
            for i in range(part * count // 4, (part + 1) * count // 4))),
            name=f"part-{part}.yaml")
    return gateway


def _launch_until_building(gateway: Gateway) -> None:
    """Launch ``gateway`` and return once its workers are started and its first build is
    under way (it logged the first part sent)."""
    gateway.launch()
    poll_until(lambda: "sent the workers a first part" in gateway.stderr_text(), 60,
               interval=0.01, message="workers started, the build under way")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_stop_during_start_up_drains_the_workers_started_so_far(
        tmp_path: Path, signum: signal.Signals) -> None:
    """SIGTERM and SIGINT are handled from the supervisor's first moment. Sent while the
    first configuration is still being built (a large one: its workers started, compiling a
    first part), the gateway stops once the build returns, drains those workers and exits 0:
    none is left serving unmanaged. Before, SIGTERM's default action killed the supervisor
    (exit -15) and its workers went on serving on the port until they noticed; SIGINT's
    KeyboardInterrupt left multiprocessing waiting forever for workers that ignore SIGTERM."""
    gateway = _large_gateway(tmp_path, workers=2)
    try:
        _launch_until_building(gateway)
        workers = _worker_processes(gateway.pid)
        assert len(workers) == 2
        gateway.signal(signum)
        assert gateway.process is not None
        assert gateway.process.wait(30) == 0, gateway.stderr_text()
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        assert not alive, (alive, gateway.stderr_text())
        assert port_refuses(gateway.port)
    finally:
        gateway.stop()


def test_a_sighup_during_start_up_is_a_reload_once_serving(tmp_path: Path) -> None:
    """SIGHUP's default action would kill the supervisor: sent while the first configuration
    is being built (a file changed meanwhile, the watcher off), the gateway keeps starting
    and reloads once serving, so the change is served; SIGUSR1 (logrotate) then is handled
    too. Before, the signal killed the supervisor and left its workers unmanaged."""
    gateway = _large_gateway(tmp_path, workers=1)
    try:
        _launch_until_building(gateway)
        gateway.write_config(r.dump(r.route("added", rules=[
            r.rule({"exact": "/added"}, directResponse={"status": 201})])), name="added.yaml")
        gateway.signal(signal.SIGHUP)
        gateway.signal(signal.SIGUSR1)
        gateway.wait_ready()
        poll_until(lambda: roundtrip(gateway.port, "GET", "/added").status == 201, 30,
                   message="the file changed during start-up served")
        assert roundtrip(gateway.port, "GET", "/r0").status == 200
    finally:
        assert gateway.stop() == 0, gateway.stderr_text()
