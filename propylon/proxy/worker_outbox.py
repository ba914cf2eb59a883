"""What the supervisor sends one worker, written to its pipe by a thread of its own.

A pipe write blocks while the reader does not read: a worker that is stopped or stalled (a
loaded machine that does not run it, a plugin stuck in a loop), and any message larger than
the pipe's buffer (a configuration of a few hundred routes) until the worker has read it.
Written from the supervisor's event loop, such a write froze the loop, and with it the admin
API, the health checks, DNS discovery and every other worker, for as long as that worker did
not read. The loop now only queues; the thread writes, in the order queued (a socket lent, then
the configuration that needs it). A worker that never reads again keeps its queue: its
installs are refused at the supervisor's answer timeout, and a worker that died ends the
thread's writes with an error, as its pipe's end of file ends the supervisor's reads.
"""

from __future__ import annotations

import os
import queue
import threading
from multiprocessing.connection import Connection
from multiprocessing.reduction import send_handle
from typing import Any

_STOP = object()


class _Handle:
    """A descriptor to pass: a duplicate, so that the socket may be closed meanwhile."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = os.dup(fd)


class WorkerOutbox:
    def __init__(self, conn: Connection, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.broken = False  # a write failed: the worker is gone
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"to-worker-{pid}", daemon=True)
        self._thread.start()

    def send(self, message: tuple[Any, ...]) -> None:
        self._queue.put(message)

    def send_handle(self, fd: int) -> None:
        """Pass a descriptor (a duplicate of ``fd``, taken now)."""
        self._queue.put(_Handle(fd))

    def close(self) -> None:
        """Write nothing more once what is queued is written."""
        self._queue.put(_STOP)

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            self._write(item)
            item = None  # a configuration's text is not held until the next message comes

    def _write(self, item: Any) -> None:
        if isinstance(item, _Handle):
            try:
                if not self.broken:
                    send_handle(self.conn, item.fd, self.pid)
            except OSError:
                self.broken = True
            finally:
                os.close(item.fd)
            return
        if self.broken:
            return  # the worker is gone: the end of file of its pipe tells the supervisor
        try:
            self.conn.send(item)
        except (OSError, ValueError):  # ValueError: the connection was closed here
            self.broken = True
