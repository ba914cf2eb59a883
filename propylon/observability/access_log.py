"""JSON access log: one line per request, written in batches off the request's path.

A request only appends a formatted line to a list; a timer scheduled by the first line of a
batch writes the whole batch with one ``write`` a few milliseconds later (or at once past
64 KiB). Lines written to a pipe are flushed in pieces under PIPE_BUF so that the lines of
several workers sharing stdout never interleave mid-line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from propylon.proxy.exchange import Exchange

_FLUSH_DELAY = 0.05
_FLUSH_BYTES = 64 * 1024
_PIPE_BUF = 4096


class AccessLog:
    __slots__ = ("_fd", "_file", "_lines", "_loop", "_scheduled", "_size")

    def __init__(self, loop: asyncio.AbstractEventLoop, target: str) -> None:
        self._loop = loop
        self._file: BinaryIO | None = None
        if target == "stdout":
            self._fd = sys.stdout.fileno()
        else:
            self._file = open(target, "ab", buffering=0)  # noqa: SIM115 - lives with the worker
            self._fd = self._file.fileno()
        self._lines: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def log(self, ex: Exchange, elapsed: float) -> None:
        route = ex.route
        endpoint = ex.cluster  # the endpoint is released by now; the cluster names the upstream
        entry = {
            "time": time.time(),
            "client": ex.client_ip,
            "method": ex.method.decode("latin-1"),
            "host": ex.host,
            "path": ex.path.decode("latin-1"),
            "status": ex.status,
            "bytes": ex.bytes_out,
            "duration_ms": round(elapsed * 1000, 3),
            "route": route.route_label if route is not None else None,
            "rule": route.rule_label if route is not None else None,
            "upstream": endpoint.key if endpoint is not None else None,
            "endpoint": ex.endpoint_label,
        }
        if ex.upstream_error:
            entry["error"] = ex.upstream_error
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        self._lines.append(line)
        self._size += len(line)
        if self._size >= _FLUSH_BYTES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_later(_FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        lines, self._lines, self._size = self._lines, [], 0
        batch: list[bytes] = []
        size = 0
        for line in lines:
            if size + len(line) > _PIPE_BUF and batch:
                self._write(b"".join(batch))
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            self._write(b"".join(batch))

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except BlockingIOError:
            pass  # a full pipe drops the batch rather than blocking the event loop
        except OSError:
            pass

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
