"""Writing to a pipe, a terminal or a socket without ever waiting for its reader.

A gateway's stdout and stderr are often a container runtime's log pipes or journald's socket.
When their reader stops reading (a log shipper that stalls, a terminal paused with Ctrl-S), a
blocking ``write`` stops the process's event loop once the pipe is full, and every request
with it: an access log line or a warning per request made any stall of the log's reader an
outage. ``NonBlockingWriter`` writes through a file description of its own opened
non-blocking (``/proc/self/fd/N``: the flag would otherwise be shared with every process
writing to that pipe, the other workers and the supervisor among them, whose own writes would
then fail), or with ``MSG_DONTWAIT`` on a socket. What the reader has no room for is dropped,
and the caller counts it; data taken in part (more than PIPE_BUF at once, a terminal, a
socket) has its rest written first next time, so no line is torn.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat


class NonBlockingWriter:
    """Writes to a pipe, terminal or socket without waiting (see the module doc)."""

    __slots__ = ("_fd", "_rest", "_socket")

    def __init__(self, fd: int, sock: socket.socket | None) -> None:
        self._fd, self._socket = fd, sock
        self._rest = b""

    @classmethod
    def of_fd(cls, fd: int) -> NonBlockingWriter | None:
        """The writer for what ``fd`` writes to, or None when that is a file (or anything
        but a pipe, a terminal or a socket): a disk does not stop taking writes, write it as
        it is."""
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return None
        if stat.S_ISSOCK(mode):
            return cls(-1, socket.socket(fileno=os.dup(fd)))
        if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            return None
        try:
            own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # no /proc, or a pipe whose reader is gone: written as before
            return None
        return cls(own, None)

    def write(self, data: bytes) -> bool:
        """Whether ``data`` was taken (all of it, or a part whose rest goes first next time);
        False: dropped, the reader had no room."""
        if self._rest:
            rest = self._rest
            self._rest = rest[self._send(rest):]
            if self._rest:
                return False
        sent = self._send(data)
        if sent == 0:
            return False
        self._rest = data[sent:]
        return True

    def _send(self, data: bytes) -> int:
        """Bytes taken of ``data`` (0: none now); a reader gone takes everything, unread."""
        try:
            if self._socket is not None:
                return self._socket.send(data, socket.MSG_DONTWAIT)
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            return len(data)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        else:
            with contextlib.suppress(OSError):
                os.close(self._fd)
