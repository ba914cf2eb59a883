"""YAML texts parsed on every core: a large configuration read cold (``propylon validate``,
``apply``, ``diff``, the gateway's first build) spends most of its loading time composing
YAML, one file at a time on one core.

``parse_each`` gives what ``parse_documents`` gives for each text, in order, one text at a
time, so the caller validates each text's documents while the rest are still being parsed.
When the texts are large enough to be worth it, it forks one child per other core. The texts
are claimed as the work goes (``_Claims``: two indices in a shared mapping, under a token
passed through a pipe): the children take them from the front, in file order, and send each
one's documents, pickled, through a pipe as soon as they are parsed; this process validates
them in order and, whenever the next one has not arrived, parses a text from the back. So the
work balances itself whatever the speed of each process (this one also validates every
document, and unpickles the children's).

``read_ahead`` starts that before a command has imported what it needs to validate: the
children parse while this process imports the resource models (a fifth of a second of
pydantic schemas, more for ``run``), and the next ``parse_each`` of the same texts takes the
work over. A fork is cheap and needs no import in the child; it is only done by a process with
no other thread (a fork copies only the calling thread: another thread holding a lock the
child needs would leave it stuck). A child that fails in any way, or keeps this process
waiting too long, is stopped and the texts it owes are parsed here: the result never depends
on whether a child ran.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import gc
import mmap
import os
import pickle
import select
import signal
import struct
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from propylon.config._yaml import (
    Document,
    LazyMarks,
    PlainDocument,
    documents_of,
    parse_documents,
    plain_documents,
)
from propylon.config.errors import ConfigError
from propylon.config.files import read_texts
from propylon.runtime.forked import become_child

Parsed = tuple[list[Document], list[ConfigError]]

# Below this many characters to parse, forking costs more than it saves (10,000 Routes are
# about 6 MB of YAML: 0.27 s of a core with ``_libyaml``, 1.3 s with PyYAML's node graph; at
# 1,000 Routes, 0.6 MB, forking or not made no difference to ``validate``).
PARALLEL_MIN_CHARS = 512 * 1024
MAX_PROCESSES = 8
# The children are waited for at least this long (seconds), or three times as long as they
# have been at work, for the next text they owe, before they are taken for stuck.
CHILD_GRACE = 2.0
CLAIM_WAIT = 1.0  # for the token of the claims, held a few microseconds at a time
_PIPE_SIZE = 1 << 20  # what a child can send ahead of what this process has read
_HEADER = struct.Struct("!QI")  # a record's size, then its text's index
_ENDS = struct.Struct("=ii")  # the claims' front and back


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
    parsing = _adopt(texts) or _Parsing(texts, parallel)
    try:
        yield from parsing.each()
    finally:
        parsing.close()


def read_ahead(paths: Sequence[str | Path]) -> None:
    """Start parsing the configuration files of ``paths`` on the other cores now, if there are
    enough of them: for the next ``parse_each`` of the same texts. Nothing else changes;
    texts that differ by then (a file written meanwhile) are parsed again. A read-ahead of
    the same texts already under way is kept."""
    texts = read_texts(paths, [])
    if _AHEAD and list(_AHEAD[-1].texts) == texts:
        return  # begun already, by the command's entry point (``cli/entry.py``)
    _forget_ahead()
    if _processes(texts) > 1:
        _AHEAD.append(_Parsing(texts, True))
        atexit.unregister(_forget_ahead)  # registered once, however many reads ahead
        atexit.register(_forget_ahead)


_AHEAD: list[_Parsing] = []


def _adopt(texts: Sequence[tuple[str, str]]) -> _Parsing | None:
    ahead = _AHEAD.pop() if _AHEAD else None
    if ahead is not None and list(ahead.texts) == list(texts):
        return ahead
    if ahead is not None:
        ahead.close()
    return None


def _forget_ahead() -> None:
    while _AHEAD:
        _AHEAD.pop().close()


class _Parsing:
    """``texts`` being parsed: by the children forked when it was made, and here."""

    def __init__(self, texts: Sequence[tuple[str, str]], parallel: bool) -> None:
        self.texts = texts
        self._own: dict[int, Parsed] = {}  # parsed here ahead of their turn
        self._children: list[_Child] = []
        self._claims: _Claims | None = None
        self._started = time.monotonic()
        processes = _processes(texts) if parallel else 1
        if processes < 2:
            return
        try:
            claims = _Claims(len(texts))
        except OSError:
            return
        for _ in range(1, processes):
            child = _fork(texts, claims)
            if child is not None:
                self._children.append(child)
        if self._children:
            self._claims = claims
        else:
            claims.close()

    def each(self) -> Iterator[Parsed]:
        for index in range(len(self.texts)):
            yield self._get(index)
            for child in self._children:
                child.read_ready()  # so that no child waits on a full pipe

    def _get(self, index: int) -> Parsed:
        while True:
            got = self._own.pop(index, None)
            if got is None:
                got = self._sent(index, wait=False)
            if got is not None:
                return got
            if self._claims is None or not self._at_work():
                return self._parse(index)
            taken = self._claims.take(from_back=True)
            if taken is None:  # every text left is a child's: wait for this one
                got = self._sent(index, wait=True)
                return got if got is not None else self._parse(index)
            self._own[taken] = self._parse(taken)

    def _parse(self, index: int) -> Parsed:
        name, text = self.texts[index]
        return parse_documents(text, name)

    def _at_work(self) -> bool:
        return any(not child.done for child in self._children)

    def _sent(self, index: int, wait: bool) -> Parsed | None:
        """Text ``index`` as a child sent it; with ``wait``, waited for until no child at
        work can send it or they are taken for stuck (then every child is stopped)."""
        waited_since = time.monotonic()
        while True:
            for child in self._children:
                child.read_ready()
                if index in child.parsed:
                    return child.take(index, self.texts[index][1])
            if not wait or not self._at_work():
                return None
            grace = max(CHILD_GRACE, 3 * (waited_since - self._started))
            left = waited_since + grace - time.monotonic()
            if left <= 0:
                self.close()
                return None
            select.select([c.read_end for c in self._children if c.read_end is not None],
                          [], [], left)

    def close(self) -> None:
        """Stop and reap the children; what they owe is parsed here."""
        for child in self._children:
            child.stop()
        if self._claims is not None:
            self._claims.close()
            self._claims = None


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


class _Claims:
    """Which texts are still to be parsed, shared by this process and its children: the
    indices ``front`` and ``back`` in an anonymous shared mapping, changed only by the holder
    of a token (one byte in a pipe). A holder that dies takes the token with it: the others
    stop claiming after ``CLAIM_WAIT``, and what is owed is parsed here."""

    def __init__(self, count: int) -> None:
        self._ends = mmap.mmap(-1, _ENDS.size)
        _ENDS.pack_into(self._ends, 0, 0, count)
        self._take, self._give = os.pipe()
        os.set_blocking(self._take, False)
        os.write(self._give, b".")

    def take(self, from_back: bool) -> int | None:
        """The next text from the front or the back, or None if none is left."""
        if not self._hold():
            return None
        try:
            front, back = _ENDS.unpack_from(self._ends, 0)
            if front >= back:
                return None
            if from_back:
                back -= 1
            else:
                front += 1
            _ENDS.pack_into(self._ends, 0, front, back)
            return back if from_back else front - 1
        finally:
            os.write(self._give, b".")

    def _hold(self) -> bool:
        deadline = time.monotonic() + CLAIM_WAIT
        while True:
            try:
                if os.read(self._take, 1):
                    return True
            except BlockingIOError:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([self._take], [], [], left)

    def close(self) -> None:
        os.close(self._take)
        os.close(self._give)
        self._ends.close()


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
    plain documents of each text, or its ``Parsed`` without the text, pickled, by index."""

    pid: int
    read_end: int | None
    received: bytearray = field(default_factory=bytearray)
    parsed: dict[int, bytes] = field(default_factory=dict)
    done: bool = False  # ended, stopped or failed: what it owes and did not send is parsed here

    def take(self, index: int, text: str) -> Parsed | None:
        """The child's documents of text ``index``, if it sent them (else None: parse it
        here)."""
        data = self.parsed.pop(index, None)
        if data is None:
            return None
        try:
            got = pickle.loads(data)
        except Exception:
            self.stop()
            return None
        if isinstance(got, list):  # plain documents
            return documents_of(text, got), []
        if not (isinstance(got, tuple) and len(got) == 2):
            return None
        _attach_text(got, text)
        return got

    def read_ready(self) -> None:
        """What the child has written so far, without waiting; at the end of the pipe (it
        ended, having sent all it could) or on a failure to read, it is done."""
        if self.done:
            return
        assert self.read_end is not None
        try:
            while select.select([self.read_end], [], [], 0)[0]:
                chunk = os.read(self.read_end, _PIPE_SIZE)
                if not chunk:
                    self.stop()
                    break
                self.received += chunk
        except OSError:
            self.stop()
        self._records()

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


def _fork(texts: Sequence[tuple[str, str]], claims: _Claims) -> _Child | None:
    """A child parsing the texts it claims from the front, or None if none started."""
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
            gc.disable()  # everything parsed stays alive until the child ends (gc_pause.py)
            # what the pipe cannot take yet waits here: parsing never waits for the parent,
            # which may still be importing what it needs (``read_ahead``)
            os.set_blocking(write, False)
            unsent = bytearray()
            while (i := claims.take(from_back=False)) is not None:
                # plain documents are sent as built, of built-in types only (several
                # times faster to unpickle than ``Document``s); the others as ``Parsed``
                sent: list[PlainDocument] | Parsed | None = plain_documents(texts[i][1])
                if sent is None:
                    sent = parse_documents(texts[i][1], texts[i][0])
                    _detach_text(sent)
                data = pickle.dumps(sent, pickle.HIGHEST_PROTOCOL)
                unsent += _HEADER.pack(len(data), i)
                unsent += data
                _send(write, unsent)
            os.set_blocking(write, True)
            _send(write, unsent)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return _Child(pid, read)


def _send(fd: int, unsent: bytearray) -> None:
    """Write what ``fd`` takes of ``unsent`` (all of it if ``fd`` blocks) and drop it."""
    with memoryview(unsent) as view:
        sent = 0
        try:
            while sent < len(view):
                sent += os.write(fd, view[sent:])
        except BlockingIOError:
            pass
    del unsent[:sent]
