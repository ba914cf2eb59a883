"""A call made in a forked child while this process goes on with other work.

A one-shot command that has built a large configuration in memory (``propylon validate``) has
steps that need it but not each other, such as compiling it to check it and hashing it for
its version; a fork gives the child the whole of it at no cost, and the other core does one
step while this process does the other. Only the result comes back, pickled, through a pipe.

The result never depends on whether a child ran: when none can start (another thread is
running: a fork copies only the calling thread, and a lock another thread holds would stay
held in the child forever), or the child fails in any way, ``result`` makes the call here,
where an exception it raises is raised as usual.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def become_child() -> None:
    """What a forked child does first: the parent's signal handling is not its own (an event
    loop's wakeup descriptor would hear the child's signals; Ctrl-C stops it at once)."""
    signal.set_wakeup_fd(-1)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


class ForkedCall(Generic[T]):
    """``call()`` started in a forked child; ``result()`` waits for it."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._call = call
        self._pid = 0
        self._read = -1
        if threading.active_count() != 1:
            return
        try:
            read, write = os.pipe()
        except OSError:
            return
        try:
            pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            return
        if pid == 0:  # the child: call, send, and end without running the parent's cleanup
            code = 1
            try:
                os.close(read)
                become_child()
                view = memoryview(pickle.dumps(call(), pickle.HIGHEST_PROTOCOL))
                while view:
                    view = view[os.write(write, view):]
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self._pid, self._read = pid, read

    @property
    def forked(self) -> bool:
        return self._pid != 0

    def result(self) -> T:
        """What the call returned in the child, or, if the child gave nothing, the call's
        result (or exception) here."""
        if self._pid:
            data = self._collect()
            if data is not None:
                with contextlib.suppress(Exception):
                    return pickle.loads(data)
        return self._call()

    def cancel(self) -> None:
        """Stop the child, if there is one, without its result."""
        if self._pid:
            with contextlib.suppress(OSError):
                os.kill(self._pid, signal.SIGKILL)
            os.close(self._read)
            pid, self._pid = self._pid, 0
            os.waitpid(pid, 0)

    def _collect(self) -> bytes | None:
        chunks = []
        try:
            while chunk := os.read(self._read, 1 << 16):
                chunks.append(chunk)
        except OSError:
            chunks = []
        finally:
            os.close(self._read)
            pid, self._pid = self._pid, 0
            _, status = os.waitpid(pid, 0)
        return b"".join(chunks) if chunks and os.waitstatus_to_exitcode(status) == 0 else None
