"""Access log: one line per request (JSON, or the combined log format), written in batches
off the request's path; ``reopen`` (SIGUSR1) starts a new file after a rotation.

A request only appends a formatted line to a list; a timer scheduled by the first line of a
batch writes the whole batch with one ``write`` a few milliseconds later (or at once past
64 KiB). Lines written to a pipe are flushed in pieces under PIPE_BUF so that the lines of
several workers sharing stdout never interleave mid-line.

Stdout that is a pipe, a terminal or a socket (a container runtime's log pipe, journald's
socket) is written without waiting (``nonblocking.py``): when its reader stops reading (a log
shipper that stalls, a terminal paused with Ctrl-S), a blocking ``write`` would stop the
worker's event loop and every request with it. What it cannot take at once waits in the
writer's backlog; what overflows that is dropped, whole lines, and counted
(``propylon_access_log_lines_dropped_total``). A file (``--access-log PATH``, or
stdout redirected to one) is written as before: a disk does not stop taking writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, BinaryIO

from propylon.observability.log_metrics import LOG_COUNTERS
from propylon.observability.nonblocking import NonBlockingWriter

if TYPE_CHECKING:
    from propylon.proxy.session import Session

_FLUSH_DELAY = 0.05
_FLUSH_BYTES = 64 * 1024
_PIPE_BUF = 4096


_quote = json.encoder.encode_basestring  # the C escaper behind json.dumps, without the dict walk


def _text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def format_line(ex: Session, elapsed: float, now: float) -> bytes:
    """One JSON object: time, request_id, client, method, host, path, status, bytes,
    duration_ms, route, rule, upstream, endpoint, upstream_status and upstream_duration_ms
    when an upstream answered (its last try's: status, and milliseconds from the request
    head sent to the response head), error when the upstream failed, trace_id when tracing
    set one, protocol (HTTP/2 streams) and grpc_status (gRPC calls), and proxy when a PROXY
    protocol header named the client (the balancer's address and kept TLVs)."""
    route = ex.route
    forwarder = ex.forwarder
    # the endpoint is released by now; the cluster names the upstream
    cluster = forwarder.cluster if forwarder is not None else None
    endpoint = forwarder.endpoint_label if forwarder is not None else None
    answered = (f',"upstream_status":{forwarder.head_status},'
                f'"upstream_duration_ms":{forwarder.head_waited * 1000:.3f}'
                if forwarder is not None and forwarder.head_status else "")
    error = f',"error":{_quote(ex.upstream_error)}' if ex.upstream_error else ""
    trace_id = getattr(ex, "trace_id", None)  # a slot tracing sets when it is on
    trace = f',"trace_id":{_quote(trace_id)}' if trace_id else ""
    proto = ex.proto
    grpc_status = proto.grpc_status  # an HTTP/2 stream's, for gRPC calls; else None
    if grpc_status is not None:
        trace += f',"protocol":"HTTP/2","grpc_status":{grpc_status}'
    elif proto.http2:
        trace += ',"protocol":"HTTP/2"'
    return (
        f'{{"time":{now:.6f},"request_id":{_quote(ex.request_id.decode("latin-1"))},'
        f'"client":{_quote(ex.client_ip)},'
        f'"method":{_quote(ex.method.decode("latin-1"))},"host":{_quote(ex.host)},'
        f'"path":{_quote(ex.path.decode("latin-1"))},"status":{ex.status},'
        f'"bytes":{ex.bytes_out},"duration_ms":{elapsed * 1000:.3f},'
        f'"route":{_text(route.route_label if route is not None else None)},'
        f'"rule":{_text(route.rule_label if route is not None else None)},'
        f'"upstream":{_text(cluster.key if cluster is not None else None)},'
        f'"endpoint":{_text(endpoint)}{answered}{error}{trace}{proto.proxy_log}}}\n'
    ).encode("utf-8", "surrogateescape")


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _field(value: str | None) -> str:
    """A quoted field of the combined format (``"-"`` when absent, as nginx and Apache
    write it)."""
    if value is None:
        return '"-"'
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_combined(ex: Session, elapsed: float, now: float) -> bytes:
    """The combined log format (Apache/nginx): ``client - - [time] "request" status bytes
    "referer" "user-agent"``, with the duration in milliseconds and the request id appended
    (as nginx's ``$request_time`` and ``$request_id`` are often added)."""
    t = time.gmtime(now)
    stamp = (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
             f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")
    target = ex.path + (b"?" + ex.query if ex.query else b"")
    version = "HTTP/2.0" if ex.proto.http2 else "HTTP/1.1" if ex.http11 else "HTTP/1.0"
    request = f"{ex.method.decode('latin-1')} {target.decode('latin-1')} {version}"
    return (
        f'{ex.client_ip or "-"} - - [{stamp}] {_field(request)} {ex.status} {ex.bytes_out} '
        f'{_field(ex.header("referer"))} {_field(ex.header("user-agent"))} '
        f'{elapsed * 1000:.3f} {_field(ex.request_id.decode("latin-1"))}\n'
    ).encode("utf-8", "surrogateescape")


FORMATS = {"json": format_line, "combined": format_combined}


class AccessLog:
    __slots__ = ("_fd", "_file", "_format", "_lines", "_loop", "_scheduled", "_size",
                 "_stdout", "_target")

    def __init__(self, loop: asyncio.AbstractEventLoop, target: str,
                 line_format: str = "json") -> None:
        self._loop = loop
        self._format = FORMATS[line_format]
        self._target = target
        self._file: BinaryIO | None = None
        self._stdout: NonBlockingWriter | None = None
        if target == "stdout":
            self._fd = sys.stdout.fileno()
            self._stdout = NonBlockingWriter.of_fd(self._fd)
        else:
            self._file = open(target, "ab", buffering=0)  # noqa: SIM115 - lives with the worker
            self._fd = self._file.fileno()
        self._lines: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def reopen(self) -> None:
        """Write what is pending, then continue in a new file of the same name (after
        logrotate renamed the old one). A file that cannot be opened keeps the old one."""
        self.flush()
        if self._file is None:
            return
        try:
            new = open(self._target, "ab", buffering=0)  # noqa: SIM115
        except OSError:
            return
        old, self._file = self._file, new
        self._fd = new.fileno()
        old.close()

    def log(self, ex: Session, elapsed: float) -> None:
        line = self._format(ex, elapsed, time.time())
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
        if self._stdout is not None:
            if not self._stdout.write(data):
                LOG_COUNTERS.access_lines_dropped += data.count(b"\n")
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, data)

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
        if self._stdout is not None:
            self._stdout.close()
