"""NonBlockingWriter on a real pipe and socket: nothing waits, nothing is torn, a burst to a
live reader is kept, a reader stalled for good costs only what overflows the backlog."""

from __future__ import annotations

import os
import socket
import tempfile
import time

import pytest

from propylon.observability import nonblocking
from propylon.observability.nonblocking import NonBlockingWriter


def _read_until(read, size: int, timeout: float = 10.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < size and time.monotonic() < deadline:
        try:
            chunk = read(1 << 20)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        if not chunk:
            break
        got += chunk
    return got


def test_a_burst_to_a_live_pipe_is_kept_in_order() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    writer = NonBlockingWriter.of_fd(write_end)
    assert writer is not None
    try:
        lines = [b"%07d\n" % i for i in range(100_000)]  # 800 KB: more than the pipe holds
        started = time.monotonic()
        assert all(writer.write(line) for line in lines)  # none waits for the reader
        assert time.monotonic() - started < 5
        assert os.get_blocking(write_end)  # the shared descriptor stays as it was
        expected = b"".join(lines)
        assert _read_until(lambda n: os.read(read_end, n), len(expected)) == expected
    finally:
        writer.close()
        os.close(read_end)
        os.close(write_end)


def test_a_stalled_reader_costs_what_overflows_the_backlog(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nonblocking, "BACKLOG_BYTES", 256 * 1024)
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    writer = NonBlockingWriter.of_fd(write_end)
    assert writer is not None
    try:
        batch = b"".join(b"%07d\n" % i for i in range(512))  # 4 KiB
        taken = [writer.write(batch) for _ in range(200)]  # 800 KiB, nobody reading
        assert all(taken[:60]) and not all(taken)  # 64 KiB in the pipe, 256 KiB queued
        kept = sum(taken) * len(batch)
        got = _read_until(lambda n: os.read(read_end, n), kept)
        assert got == batch * sum(taken)  # whole batches, in order
        assert writer.write(b"after\n")  # room again: written
        assert _read_until(lambda n: os.read(read_end, n), 6) == b"after\n"
    finally:
        writer.close()
        os.close(read_end)
        os.close(write_end)


def test_a_socket_is_written_without_waiting() -> None:
    ours, theirs = socket.socketpair()
    writer = NonBlockingWriter.of_fd(theirs.fileno())
    assert writer is not None
    try:
        lines = [b"line %d\n" % i for i in range(50_000)]
        assert all(writer.write(line) for line in lines)
        ours.setblocking(False)
        expected = b"".join(lines)
        assert _read_until(ours.recv, len(expected)) == expected
    finally:
        writer.close()
        ours.close()
        theirs.close()


def test_a_file_is_left_to_ordinary_writes() -> None:
    with tempfile.TemporaryFile() as file:
        assert NonBlockingWriter.of_fd(file.fileno()) is None
