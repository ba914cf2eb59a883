"""Writing to a pipe, a terminal or a socket without ever making the caller wait for its reader.

A gateway's stdout and stderr are often a container runtime's log pipes or journald's socket.
When their reader stops reading (a log shipper that stalls, a terminal paused with Ctrl-S), a
blocking ``write`` stops the process's event loop once the pipe is full, and every request
with it: an access log line or a warning per request made any stall of the log's reader an
outage. ``NonBlockingWriter`` writes through a file description of its own opened
non-blocking (``/proc/self/fd/N``: the flag would otherwise be shared with every process
writing to that pipe, the other workers and the supervisor among them), or with
``MSG_DONTWAIT`` on a socket.

What the reader has no room for right now waits in a backlog (at most ``BACKLOG_BYTES``),
written in order by a thread that waits for the reader and ends once the backlog is empty: a
burst to a slow but live reader (``| tee``, a busy log driver) loses nothing and holds up
nobody. Only what would overflow the backlog, a reader stalled for good, is dropped, whole,
and the caller counts it. No thread runs unless a write found the reader full (a process with
a thread does not fork its parsing children, ``parse_pool.py``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import socket
import stat
import threading

BACKLOG_BYTES = 4 * 1024 * 1024
_WAIT = 1.0  # seconds the backlog's thread waits for room before looking again


class NonBlockingWriter:
    """Writes to a pipe, terminal or socket without waiting (see the module doc)."""

    __slots__ = ("_backlog", "_fd", "_lock", "_queued", "_socket", "_thread")

    def __init__(self, fd: int, sock: socket.socket | None) -> None:
        self._fd, self._socket = fd, sock
        self._backlog: collections.deque[bytes] = collections.deque()
        self._queued = 0  # bytes in the backlog
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

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
        """Whether ``data`` was taken (written, or queued behind what waits); False: dropped,
        the backlog is full."""
        with self._lock:
            if not self._backlog:
                sent = self._send(data)
                if sent == len(data):
                    return True
                data = data[sent:]  # the rest of a write taken in part goes first
            elif self._queued + len(data) > BACKLOG_BYTES:
                return False
            self._backlog.append(data)
            self._queued += len(data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="propylon-log-backlog",
                                                daemon=True)
                self._thread.start()
            return True

    def _drain(self) -> None:
        """Write the backlog in order as the reader makes room; end once it is empty."""
        while True:
            with self._lock:
                if not self._backlog:
                    self._thread = None
                    return
                data = self._backlog[0]
                sent = self._send(data)
                if sent:
                    self._queued -= sent
                    if sent == len(data):
                        self._backlog.popleft()
                    else:
                        self._backlog[0] = data[sent:]
                    continue
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        fd = self._socket.fileno() if self._socket is not None else self._fd
        with contextlib.suppress(OSError, ValueError):
            select.select([], [fd], [], _WAIT)

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
        """What waits is given up (a process ending does not wait for a stalled reader)."""
        with self._lock:
            self._backlog.clear()
            self._queued = 0
            if self._socket is not None:
                self._socket.close()
            else:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
