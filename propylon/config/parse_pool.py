"""YAML texts parsed on every core: a large configuration read cold (``propylon validate``,
``apply``, ``diff``, the gateway's first build) spends most of its loading time composing
YAML, one file at a time on one core.

``parse_each`` gives what ``parse_documents`` gives for each text, in order, one text at a
time, so the caller validates each text's documents while the rest are still being parsed.
When the texts are large enough to be worth it, it forks one child per other core. The texts
are dealt in file order, most of them to the children (this process also validates every
document, theirs included); each child parses its texts in order and sends each one's
documents, pickled, through a pipe as soon as they are parsed, while this process parses its
own texts as they come. A fork is cheap and needs no import in the child; it is only done by
a process with no other thread (a fork copies only the calling thread: another thread holding
a lock the child needs would leave it stuck). A child that fails in any way, or keeps this
process waiting too long, is stopped and the rest of its texts are parsed here: the result
never depends on whether a child ran.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import select
import signal
import struct
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from propylon.config._yaml import Document, LazyMarks, parse_documents
from propylon.config.errors import ConfigError
from propylon.runtime.forked import become_child

Parsed = tuple[list[Document], list[ConfigError]]

# Below this many characters to parse, forking costs more than it saves (10,000 Routes are
# about 6 MB of YAML and take about a second to compose on one core).
PARALLEL_MIN_CHARS = 512 * 1024
MAX_PROCESSES = 8
# A child waited for at least this long (seconds), or three times as long as this process has
# been at work, for the next text it owes, before it is taken for stuck.
CHILD_GRACE = 2.0
# This process's share of the text against a child's: it also validates every document
# (about half a parse) and unpickles the children's (a seventh), where a child parses and
# pickles (a quarter of a parse). With two processes, 31 % of the text is parsed here.
OWN_WEIGHT = 0.45
_PIPE_SIZE = 1 << 20  # what a child can send ahead of what this process has read
_HEADER = struct.Struct("!QI")  # a record's size, then its text's index


def parse_all(texts: Sequence[tuple[str, str]], parallel: bool = True) -> list[Parsed]:
    """``parse_documents(text, filename)`` of each ``(filename, text)``, in order; in one
    process unless ``parallel``."""
    with contextlib.closing(parse_each(texts, parallel)) as each:
        return list(each)


def parse_each(
    texts: Sequence[tuple[str, str]], parallel: bool = True
) -> Generator[Parsed, None, None]:
    """``parse_documents`` of each text, in order, as each one is ready. Closing the iterator
    before its end stops the children still at work."""
    processes = _processes(texts) if parallel else 1
    if processes < 2:
        for name, text in texts:
            yield parse_documents(text, name)
        return
    owner = _deal(texts, processes)
    children: dict[int, _Child] = {}
    try:
        for number in range(1, processes):
            child = _fork(texts, [i for i, o in enumerate(owner) if o == number])
            if child is not None:
                children[number] = child
        started = time.monotonic()
        for i, (name, text) in enumerate(texts):
            child = children.get(owner[i])
            got = child.take(i, started) if child is not None else None
            if got is None:
                got = parse_documents(text, name)
            else:
                _attach_text(got, text)
            yield got
            for other in children.values():
                other.read_ready()  # so that no child waits on a full pipe
    finally:
        for child in children.values():
            child.stop()


def _processes(texts: Sequence[tuple[str, str]]) -> int:
    if len(texts) < 2 or sum(len(text) for _, text in texts) < PARALLEL_MIN_CHARS:
        return 1
    if threading.active_count() > 1 or not hasattr(os, "fork"):
        return 1  # another thread may hold a lock the child would need
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_PROCESSES, len(texts)))


def _deal(texts: Sequence[tuple[str, str]], processes: int) -> list[int]:
    """The process (0: this one) parsing each text: in file order, each text to the process
    that would be done with it first at its weight, so every child keeps ahead of this
    process's reading."""
    weights = [OWN_WEIGHT] + [1.0] * (processes - 1)
    sizes = [0] * processes
    owner = []
    for _, text in texts:
        size = len(text) + 1
        best = min(range(processes), key=lambda p: (sizes[p] + size) / weights[p])
        sizes[best] += size
        owner.append(best)
    return owner


def _detach_text(parsed: Parsed) -> None:
    for document in parsed[0]:
        if isinstance(document.marks, LazyMarks):
            document.marks.detach_text()


def _attach_text(parsed: Parsed, text: str) -> None:
    for document in parsed[0]:
        if isinstance(document.marks, LazyMarks):
            document.marks.attach_text(text)


@dataclass
class _Child:
    """A forked child parsing some of the texts, in order, and what it has sent so far: the
    ``Parsed`` of each text, pickled without the text, by index."""

    pid: int
    read_end: int | None
    received: bytearray = field(default_factory=bytearray)
    parsed: dict[int, bytes] = field(default_factory=dict)
    done: bool = False  # ended, stopped or failed: what it still owes is parsed here

    def take(self, index: int, started: float) -> Parsed | None:
        """The child's documents of text ``index``, or None (parse it here): waited for
        until the child is taken for stuck."""
        waited_since = time.monotonic()
        while index not in self.parsed and not self.done:
            grace = max(CHILD_GRACE, 3 * (waited_since - started))
            left = waited_since + grace - time.monotonic()
            if left <= 0 or not self._read(left):
                self.stop()
        data = self.parsed.pop(index, None)
        if data is None:
            return None
        try:
            got = pickle.loads(data)
        except Exception:
            self.stop()
            return None
        return got if isinstance(got, tuple) and len(got) == 2 else None

    def read_ready(self) -> None:
        """What the child has written so far, without waiting."""
        if not self.done:
            self._read(0.0)

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False if the child ended without sending
        all it owes."""
        assert self.read_end is not None
        try:
            if not select.select([self.read_end], [], [], timeout)[0]:
                return timeout == 0.0  # nothing yet
            while True:
                chunk = os.read(self.read_end, _PIPE_SIZE)
                if not chunk:
                    self._records()
                    return False  # end of the pipe: it sent all it could
                self.received += chunk
                if len(chunk) < _PIPE_SIZE or not select.select([self.read_end], [], [], 0)[0]:
                    break
        except OSError:
            return False
        self._records()
        return True

    def _records(self) -> None:
        view, at = memoryview(self.received), 0
        while len(view) - at >= _HEADER.size:
            size, index = _HEADER.unpack_from(view, at)
            end = at + _HEADER.size + size
            if end > len(view):
                break
            self.parsed[index] = bytes(view[at + _HEADER.size:end])
            at = end
        view.release()
        del self.received[:at]

    def stop(self) -> None:
        """Stop (if still at work) and reap the child; what it owes is parsed here."""
        if self.read_end is not None:
            os.close(self.read_end)
            self.read_end = None
        self.done = True
        if self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0


def _fork(texts: Sequence[tuple[str, str]], share: list[int]) -> _Child | None:
    """A child parsing ``share``, or None if none started."""
    if not share:
        return None
    try:
        read, write = os.pipe()
    except OSError:
        return None
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:  # the child: parse, send, and end without running the parent's cleanup
        code = 1
        try:
            os.close(read)
            become_child()
            for i in share:
                got = parse_documents(texts[i][1], texts[i][0])
                _detach_text(got)
                data = pickle.dumps(got, pickle.HIGHEST_PROTOCOL)
                view = memoryview(_HEADER.pack(len(data), i) + data)
                while view:
                    view = view[os.write(write, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return _Child(pid, read)
