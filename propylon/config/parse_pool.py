"""YAML texts parsed on every core: a large configuration read cold (``propylon validate``,
``apply``, ``diff``) spends most of its loading time composing YAML, one file at a time on
one core.

``parse_all`` gives what ``parse_documents`` gives for each text, in order. When the texts are
large enough to be worth it, it forks one child per other core, each parsing a share of the
texts and sending back its documents pickled through a pipe, while this process parses its own
share. A fork is cheap and needs no import in the child; it is only done by a process with
no other thread (a fork copies only the calling thread: another thread holding a lock the
child needs would leave it stuck). A child that fails in any way, or is still at work well
after this process finished its own share, leaves its share to this process: the result
never depends on whether a child ran. ``propylon run`` uses it for its first build only,
before its workers start (``load_paths``).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Sequence

from propylon.config._yaml import Document, parse_documents
from propylon.config.errors import ConfigError

Parsed = tuple[list[Document], list[ConfigError]]

# Below this many characters to parse, forking costs more than it saves (10,000 Routes are
# about 6 MB of YAML and take about a second to compose on one core).
PARALLEL_MIN_CHARS = 512 * 1024
MAX_PROCESSES = 8
CHILD_GRACE = 2.0  # seconds a child is waited for at least, after this process parsed its share


def parse_all(texts: Sequence[tuple[str, str]], parallel: bool = True) -> list[Parsed]:
    """``parse_documents(text, filename)`` of each ``(filename, text)``, in order; in one
    process unless ``parallel``."""
    processes = _processes(texts) if parallel else 1
    if processes < 2:
        return [parse_documents(text, name) for name, text in texts]
    shares = _shares(texts, processes)
    children = [_fork(texts, share) for share in shares[1:]]
    started = time.monotonic()
    parsed: dict[int, Parsed] = {i: parse_documents(texts[i][1], texts[i][0])
                                 for i in shares[0]}
    # a child taking far longer than this process did for as much text is stuck: stopped
    deadline = time.monotonic() + max(CHILD_GRACE, 3 * (time.monotonic() - started))
    for share, child in zip(shares[1:], children, strict=True):
        got = _collect(child, deadline) if child is not None else None
        if got is None or len(got) != len(share):
            got = [parse_documents(texts[i][1], texts[i][0]) for i in share]
        parsed.update(zip(share, got, strict=True))
    return [parsed[i] for i in range(len(texts))]


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


def _shares(texts: Sequence[tuple[str, str]], processes: int) -> list[list[int]]:
    """Indexes of ``texts`` for each process, the largest texts first to the least loaded,
    so the shares take about the same time; each share in file order."""
    shares: list[list[int]] = [[] for _ in range(processes)]
    sizes = [0] * processes
    for i in sorted(range(len(texts)), key=lambda i: -len(texts[i][1])):
        least = sizes.index(min(sizes))
        shares[least].append(i)
        sizes[least] += len(texts[i][1])
    return [sorted(share) for share in shares]


def _fork(texts: Sequence[tuple[str, str]], share: list[int]) -> tuple[int, int] | None:
    """A child parsing ``share``: (pid, the read end of its pipe), or None if none started."""
    try:
        read, write = os.pipe()
    except OSError:
        return None
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
            signal.set_wakeup_fd(-1)  # the parent's event loop must not hear the child's signals
            for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(number, signal.SIG_DFL)
            got = [parse_documents(texts[i][1], texts[i][0]) for i in share]
            data = pickle.dumps(got, pickle.HIGHEST_PROTOCOL)
            view = memoryview(data)
            while view:
                view = view[os.write(write, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _collect(child: tuple[int, int], deadline: float) -> list[Parsed] | None:
    """What the child sent, or None if it failed or did not finish by ``deadline``."""
    pid, read = child
    chunks: list[bytes] = []
    try:
        while (left := deadline - time.monotonic()) > 0 and select.select([read], [], [], left)[0]:
            chunk = os.read(read, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        else:
            chunks = []
            os.kill(pid, signal.SIGKILL)
    except OSError:
        chunks = []
    finally:
        os.close(read)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or not chunks:
        return None
    try:
        got = pickle.loads(b"".join(chunks))
    except Exception:  # a truncated pipe: parse here instead
        return None
    return got if isinstance(got, list) else None
