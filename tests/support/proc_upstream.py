"""A tiny HTTP/1.1 upstream in its own process, so a test can kill it (SIGKILL, by PID).

Run as ``python -m tests.support.proc_upstream PORT NAME``: every request (keep-alive,
Content-Length bodies) is answered ``200`` with ``x-upstream: NAME`` and a short body. The
parent's ``ProcessUpstream`` starts it, waits until the port accepts connections, and kills
it by PID; it is never found by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.net import free_port, poll_until

REPO = Path(__file__).resolve().parents[2]


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: bytes) -> None:
    try:
        for _ in range(10_000_000):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            body = b"ok " + name + b"\n"
            writer.write(b"HTTP/1.1 200 OK\r\nx-upstream: " + name + b"\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def _main(port: int, name: str) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, name.encode()), "127.0.0.1", port, reuse_address=True
    )
    async with server:
        await server.serve_forever()


class ProcessUpstream:
    """``python -m tests.support.proc_upstream`` on a free loopback port."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> ProcessUpstream:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.proc_upstream", str(self.port), self.name],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(self._accepting, timeout, interval=0.02, message=f"{self.name} listening")
        return self

    def _accepting(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"upstream {self.name} exited with {self.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID: open connections are reset, the port then refuses."""
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


if __name__ == "__main__":  # pragma: no cover - runs in the child process
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(int(sys.argv[1]), sys.argv[2]))
