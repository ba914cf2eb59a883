"""NonBlockingWriter on a real pipe and socket: nothing waits, nothing is torn."""

from __future__ import annotations

import os
import socket
import tempfile

from propylon.observability.nonblocking import NonBlockingWriter


def _drain(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_a_full_pipe_drops_and_a_part_taken_is_finished_first() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    writer = NonBlockingWriter.of_fd(write_end)
    assert writer is not None
    try:
        big = b"".join(b"%07d\n" % i for i in range(40_000))  # 320 KB: more than the pipe holds
        assert writer.write(big)  # taken in part, the rest held
        assert not writer.write(b"dropped\n")  # the rest cannot be finished yet: dropped
        assert os.get_blocking(write_end)  # the shared descriptor stays as it was
        got = _drain(read_end)
        while len(got) < len(big):
            writer.write(b"")  # each write finishes what it can of the rest first
            got += _drain(read_end)
        assert writer.write(b"after\n")
        got += _drain(read_end)
        assert got == big + b"after\n"
    finally:
        writer.close()
        os.close(read_end)
        os.close(write_end)


def test_a_socket_is_written_without_waiting() -> None:
    ours, theirs = socket.socketpair()
    writer = NonBlockingWriter.of_fd(theirs.fileno())
    assert writer is not None
    try:
        lines = [b"line %d\n" % i for i in range(100_000)]
        taken = [line for line in lines if writer.write(line)]
        assert len(taken) < len(lines)  # the buffers filled: the rest dropped, no wait
        ours.setblocking(False)
        got = b""
        expected = b"".join(taken)
        for _ in range(100):  # a part held is sent once there is room again
            try:
                got += ours.recv(1 << 20)
            except BlockingIOError:
                writer.write(b"")
            if got == expected:
                break
        assert got == expected
    finally:
        writer.close()
        ours.close()
        theirs.close()


def test_a_file_is_left_to_ordinary_writes() -> None:
    with tempfile.TemporaryFile() as file:
        assert NonBlockingWriter.of_fd(file.fileno()) is None
