"""A real DNS server for the discovery tests: Debian's ``dnsmasq`` on a loopback port.

``Dnsmasq`` answers only from a hosts file it owns (``--addn-hosts``, no upstream servers, no
/etc/hosts) with a TTL of ``ttl`` seconds (``--local-ttl``), and NXDOMAIN for other names
under ``.test`` (``--local``). ``set_hosts`` rewrites that file and sends SIGHUP, which makes
dnsmasq read it again: the answers change while the gateway keeps asking. SRV records are
given at start (``srv``: ``--srv-host`` lines, which SIGHUP does not reload). Stopped by PID.

``BoundUpstream`` is a ``ScriptedUpstream`` listening on a chosen address and port, so that
several loopback addresses (127.0.0.2, 127.0.0.3, ...) can serve the one port a DNS name's
endpoints share, and a stopped one can be started again on the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.support.h1 import MAX_HEAD
from tests.support.net import free_port, poll_until
from tests.support.upstream import ScriptedUpstream

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


class Dnsmasq:
    def __init__(self, root: Path, hosts: Iterable[tuple[str, str]] = (), *, ttl: int = 1,
                 srv: Sequence[str] = ()) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.hosts_file = root / "hosts"
        self.log_file = root / "dnsmasq.log"
        self.port = free_port()
        self.ttl = ttl
        self.srv = tuple(srv)  # "_http._tcp.name.test,target.test,PORT,PRIORITY,WEIGHT"
        self.process: subprocess.Popen[bytes] | None = None
        self._write(hosts)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Dnsmasq:
        argv = [
            DNSMASQ, "--keep-in-foreground", "--user=root", "--conf-file=/dev/null",
            f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", f"--addn-hosts={self.hosts_file}",
            f"--local-ttl={self.ttl}", "--local=/test/", "--no-negcache", "--cache-size=0",
            "--log-facility=-", "--log-queries", "--pid-file=",
            *(f"--srv-host={line}" for line in self.srv),
        ]
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        poll_until(self._answers, 10, message="dnsmasq answering")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"dnsmasq exited: {self.log_file.read_text()[-2000:]}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            # a query for "x.test" type A: id, RD, one question
            query = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                     b"\x01x\x04test\x00\x00\x01\x00\x01")
            sock.sendto(query, ("127.0.0.1", self.port))
            try:
                return sock.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return False

    def set_hosts(self, hosts: Iterable[tuple[str, str]]) -> None:
        """Replace the answers: (address, name) lines; dnsmasq rereads them on SIGHUP."""
        self._write(hosts)
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGHUP)

    def _write(self, hosts: Iterable[tuple[str, str]]) -> None:
        tmp = self.root / ".hosts.tmp"
        tmp.write_text("".join(f"{address} {name}\n" for address, name in hosts))
        os.replace(tmp, self.hosts_file)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class BoundUpstream(ScriptedUpstream):
    def __init__(self, name: str, host: str, port: int) -> None:
        super().__init__(name)
        self.host = host
        self.port = port

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEAD, reuse_address=True)

    def restart(self) -> BoundUpstream:
        """Listen again after ``stop`` (a new thread and loop, the same address)."""
        again = BoundUpstream(self.name, self.host, self.port)
        again.handler = self.handler
        return again.start()


def free_port_on(hosts: Sequence[str]) -> int:
    """A port free on every one of ``hosts`` (loopback addresses)."""
    for _ in range(50):
        port = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for host in hosts:
                    sock = stack.enter_context(socket.socket())
                    sock.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no port free on all of {hosts}")
