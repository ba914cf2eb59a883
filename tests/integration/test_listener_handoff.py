"""The supervisor's listening sockets and the workers accepting on them, across installs that
time out, are refused, change ports, and workers that are replaced.

A supervisor runs in the test process (its event loop is the test's) with real worker
processes. A worker is made slow for real with SIGSTOP (a loaded machine that does not run it),
and the supervisor's answer timeout is shortened so that a test waits seconds, not tens of
seconds. After each sequence the checks are: every listening socket on a configured port is
one of the supervisor's (one per worker slot) and every worker holds its slot's socket, ports
no longer configured have no listening socket left in any process, and 200 new connections
are each answered within 2 s (a socket that nobody accepts on keeps connections waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from propylon import ir
from propylon.proxy import supervisor as supervisor_module
from propylon.proxy.supervisor import ConfigRefused, Supervisor
from propylon.standalone import build_snapshot
from tests.support import resources as r
from tests.support.net import free_port

ANSWER_TIMEOUT = 1.5  # the supervisor's wait for a worker's answer (10 s in production)
WORKERS = 2
CONNECTIONS = 200
CONNECTION_TIMEOUT = 2.0


def _config(tmp: Path, *ports: int, body: str = "ok") -> ir.SnapshotIR:
    listeners = [{"name": f"web{port}", "port": port, "protocol": "HTTP",
                  "address": "127.0.0.1"} for port in ports]
    gateway = r.gateway(ports[0])
    gateway["spec"]["listeners"] = listeners
    folder = tmp / f"config-{'-'.join(map(str, ports))}-{body[:16]}-{len(body)}"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(r.dump(
        gateway, r.route("main", rules=[r.rule(directResponse={"status": 200, "body": body})])))
    result = build_snapshot([folder])
    assert result.snapshot is not None, result.errors
    return result.snapshot


# -- what the kernel and /proc say ---------------------------------------------------------
def _listening(port: int) -> dict[str, int]:
    """Inode -> connections waiting to be accepted, of each socket listening on
    127.0.0.1:``port``."""
    local = f"0100007F:{port:04X}"
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":
            found[fields[9]] = int(fields[4].split(":")[1], 16)
    return found


def _socket_inodes(pid: int) -> set[str]:
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                held.add(target[8:-1])
    return held


def _check_sockets(supervisor: Supervisor, served: set[int], gone: set[int]) -> None:
    for port in served:
        owned = [str(os.fstat(s.fileno()).st_ino)
                 for s in supervisor.sockets.by_key[("127.0.0.1", port)]]
        listening = _listening(port)
        assert set(listening) == set(owned) and len(owned) == WORKERS, (
            f"port {port}: listening {listening}, the supervisor's {owned}")
        for handle in supervisor.handles:
            pid = handle.process.pid
            assert pid is not None
            assert _socket_inodes(pid) & set(owned) == {owned[handle.slot]}, (
                f"worker {handle.slot} of port {port}")
    for port in gone:
        assert _listening(port) == {}, f"port {port} is still listened on"


async def _answered(port: int) -> str:
    """'' when a new connection gets its answer in time, else what happened."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), CONNECTION_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        return f"connect: {exc!r}"
    try:
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.readline(), CONNECTION_TIMEOUT)
        return "" if head.startswith(b"HTTP/1.1 200") else f"answered {head!r}"
    except TimeoutError:
        return "no answer (waiting in an accept queue)"
    except OSError as exc:
        return repr(exc)
    finally:
        writer.close()


async def _check_served(supervisor: Supervisor, served: set[int], gone: set[int]) -> None:
    # a removed port's acceptors close in the workers' install, before they answer; their
    # lent copies when the "unlisten" the supervisor queues after the answers reaches them
    # (a message on the workers' outbox thread: milliseconds, longer on a loaded machine)
    await _until(lambda: all(_listening(port) == {} for port in gone),
                 "the removed ports are closed everywhere", timeout=5.0)
    _check_sockets(supervisor, served, gone)
    ports = sorted(served)
    failures = [f for f in await asyncio.gather(
        *(_answered(ports[i % len(ports)]) for i in range(CONNECTIONS))) if f]
    assert not failures, (
        f"{len(failures)} of {CONNECTIONS} connections failed, e.g. {failures[0]}; "
        f"accept queues: {({port: _listening(port) for port in ports})}")


# -- a supervisor in this process, workers in their own --------------------------------------
Scenario = Callable[[Supervisor], Awaitable[None]]


def _run(scenario: Scenario, workers: int = WORKERS) -> None:
    async def main() -> None:
        supervisor = Supervisor(workers=workers, drain_timeout=1.0)
        supervisor.start_workers()
        watcher = asyncio.ensure_future(supervisor.watch_workers())
        try:
            await _until_answering(supervisor)
            await scenario(supervisor)
        finally:
            watcher.cancel()
            for handle in supervisor.handles:
                if handle.process.pid is not None and handle.process.is_alive():
                    os.kill(handle.process.pid, signal.SIGCONT)
            await supervisor.drain()

    asyncio.run(main())


async def _until_answering(supervisor: Supervisor, timeout: float = 20.0) -> None:
    """Wait until every worker process runs and reads its pipe (started processes import for
    a second or so)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all(stats is not None for _, _, stats in await supervisor.worker_stats()):
        assert loop.time() < deadline, "workers did not start"
        await asyncio.sleep(0.1)


async def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def _replace_worker(supervisor: Supervisor, slot: int) -> None:
    """Kill a worker and wait until the supervisor has started its replacement."""
    dead = supervisor.handles[slot]
    assert dead.process.pid is not None
    os.kill(dead.process.pid, signal.SIGKILL)
    await _until(lambda: supervisor.handles[slot] is not dead, "the worker is replaced")


def _pause(supervisor: Supervisor, slot: int) -> Callable[[], None]:
    """Stop a worker (it runs nothing until resumed); returns what resumes it."""
    pid = supervisor.handles[slot].process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    return lambda: os.kill(pid, signal.SIGCONT)


@pytest.fixture(autouse=True)
def _short_answer_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "_ANSWER_TIMEOUT", ANSWER_TIMEOUT)


# -- the sequences -------------------------------------------------------------------------
def test_a_first_install_that_timed_out_then_succeeded_late_serves_every_connection(
        tmp_path: Path) -> None:
    """The fleet benchmark's case: one worker misses the timeout of the first install, which
    is refused (NACK), installs it late anyway, and the retry is then installed."""
    port = free_port()
    snapshot = _config(tmp_path, port)

    async def scenario(supervisor: Supervisor) -> None:
        resume = _pause(supervisor, 1)
        with pytest.raises(ConfigRefused, match="did not answer in time"):
            await supervisor.install(snapshot)
        resume()
        await supervisor.install(snapshot)  # the agent's retry
        assert supervisor.ready()
        await _check_served(supervisor, {port}, set())

    _run(scenario)


def test_a_stopped_worker_does_not_stall_the_supervisor(tmp_path: Path) -> None:
    """A configuration larger than a pipe's buffer, for a worker that does not read (stopped):
    the supervisor's loop, which runs the admin API, the health checks and the other workers,
    keeps running (the write to that worker's pipe used to block it until the worker read);
    the install is refused at the answer timeout, and taken once the worker runs again."""
    port = free_port()
    small, big = _config(tmp_path, port), _config(tmp_path, port, body="x" * 300_000)

    async def scenario(supervisor: Supervisor) -> None:
        await supervisor.install(small)
        resume = _pause(supervisor, 1)
        # if the loop blocks, nothing on it can resume the worker: a thread will
        safety = threading.Timer(6 * ANSWER_TIMEOUT, resume)
        safety.start()
        lag = asyncio.ensure_future(_worst_lag())
        try:
            with pytest.raises(ConfigRefused, match="did not answer in time"):
                await supervisor.install(big)
        finally:
            safety.cancel()
            resume()
            lag.cancel()
            worst = await asyncio.gather(lag, return_exceptions=True)
        assert _LAG[0] < 0.5, f"the supervisor's loop stalled for {_LAG[0]:.1f} s ({worst})"
        await supervisor.install(big)
        assert supervisor.ready()
        await _check_served(supervisor, {port}, set())

    _run(scenario)


_LAG = [0.0]  # the longest gap between two ticks of the loop seen by ``_worst_lag``


async def _worst_lag() -> None:
    loop = asyncio.get_running_loop()
    _LAG[0] = 0.0
    last = loop.time()
    while True:
        await asyncio.sleep(0.02)
        now = loop.time()
        _LAG[0] = max(_LAG[0], now - last - 0.02)
        last = now


def test_one_worker_is_its_own_check(tmp_path: Path) -> None:
    """With one worker the supervisor does not compile a version first: the worker's
    compilation refuses one that cannot run (NACK) and it keeps serving the one it had,
    which is not sent to it again; the next good version is installed."""
    port = free_port()
    first, second = _config(tmp_path, port), _config(tmp_path, port, body="second")
    rules = first.gateways[0].rules
    broken_rule = dataclasses.replace(rules[0], id=rules[0].id + "-bad", matches=(
        ir.MatchIR(ir.PathMatchIR("regex", "(")),))
    broken = ir.seal(dataclasses.replace(first, gateways=(
        dataclasses.replace(first.gateways[0], rules=(*rules, broken_rule)),)))

    async def scenario(supervisor: Supervisor) -> None:
        await supervisor.install(first)
        (handle,) = supervisor.handles
        asked = handle.next_id
        with pytest.raises(ConfigRefused, match=r"unterminated|missing"):
            await supervisor.install(broken)
        assert handle.next_id == asked + 1  # the broken version only, nothing put back
        assert supervisor.snapshot is first and handle.version == first.version
        assert await _answered(port) == ""
        await supervisor.install(second)
        assert handle.version == second.version

    _run(scenario, workers=1)


def test_a_refused_port_change_closes_the_new_port_and_a_later_one_moves_it(
        tmp_path: Path) -> None:
    old, new = free_port(), free_port()
    first, moved = _config(tmp_path, old), _config(tmp_path, new)

    async def scenario(supervisor: Supervisor) -> None:
        await supervisor.install(first)
        resume = _pause(supervisor, 1)
        with pytest.raises(ConfigRefused, match="did not answer in time"):
            await supervisor.install(moved)  # and the putting back of ``first`` times out
        resume()
        await supervisor.worker_stats()  # answered once it has handled what came before
        assert supervisor.snapshot is first
        await _check_served(supervisor, {old}, {new})
        await supervisor.install(moved)
        await _check_served(supervisor, {new}, {old})

    _run(scenario)


def test_a_removed_listener_is_closed_everywhere_and_a_kept_one_keeps_its_sockets(
        tmp_path: Path) -> None:
    kept, removed = free_port(), free_port()
    both, one = _config(tmp_path, kept, removed), _config(tmp_path, kept, body="changed")

    async def scenario(supervisor: Supervisor) -> None:
        await supervisor.install(both)
        await _check_served(supervisor, {kept, removed}, set())
        before = set(_listening(kept))
        await supervisor.install(one)
        await _check_served(supervisor, {kept}, {removed})
        assert set(_listening(kept)) == before  # a reload never closes a kept listener

    _run(scenario)


def test_a_replaced_worker_accepts_on_every_listener(tmp_path: Path) -> None:
    ports = {free_port(), free_port()}
    snapshot = _config(tmp_path, *sorted(ports))

    async def scenario(supervisor: Supervisor) -> None:
        await supervisor.install(snapshot)
        await _replace_worker(supervisor, 0)
        await _until(supervisor.ready, "the replacement serves")
        await _check_served(supervisor, ports, set())

    _run(scenario)


def test_a_replaced_worker_that_misses_the_timeout_is_ready_once_it_caught_up(
        tmp_path: Path) -> None:
    port = free_port()
    snapshot = _config(tmp_path, port)

    async def scenario(supervisor: Supervisor) -> None:
        await supervisor.install(snapshot)
        await _replace_worker(supervisor, 0)
        resume = _pause(supervisor, 0)  # still importing: its install will time out
        await asyncio.sleep(ANSWER_TIMEOUT + 0.5)
        assert not supervisor.ready()
        resume()
        await _until(supervisor.ready, "the replacement catches up")
        await _check_served(supervisor, {port}, set())

    _run(scenario)
