"""The gateway's own logs: one record per line, as text or as JSON (``--log-format``).

JSON records carry ``time`` (epoch seconds), ``level``, ``logger``, ``process`` (``propylon``
for the supervisor or the control plane, ``worker[PID]`` for a worker), ``message`` and, when
there is one, ``exception`` (the traceback as one string). Text records keep the historical
shape; a traceback's lines follow the record. Log collectors want the JSON form: a multi-line
traceback is one record there.

Stderr that is a pipe, a terminal or a socket is written without waiting for its reader
(``nonblocking.py``): a worker logs a warning per request in some cases (a WAF intervention,
an extAuth service away), and a stalled log reader must not stop the worker. Records that
overflow the writer's backlog are dropped; the next record written is preceded by one saying
how many.
"""

from __future__ import annotations

import json
import logging
import sys

from propylon.observability.log_metrics import LOG_COUNTERS
from propylon.observability.nonblocking import NonBlockingWriter

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False)


class NonBlockingHandler(logging.Handler):
    """Records written to ``writer``, one line each (a text traceback's lines after it);
    those it drops (its backlog full) are counted and announced by a record before the next
    one written."""

    def __init__(self, writer: NonBlockingWriter) -> None:
        super().__init__()
        self.writer = writer
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
            if self.dropped:
                text = self.format(logging.makeLogRecord({
                    "name": "propylon", "levelno": logging.WARNING, "levelname": "WARNING",
                    "msg": "%d log record(s) dropped: stderr was not being read",
                    "args": (self.dropped,)})) + "\n" + text
        except Exception:
            self.handleError(record)
            return
        if self.writer.write(text.encode("utf-8", "backslashreplace")):
            self.dropped = 0
        else:
            self.dropped += 1
            LOG_COUNTERS.records_dropped += 1

    def close(self) -> None:
        self.writer.close()
        super().close()


def configure_logging(level: str, log_format: str = "text", process: str = "propylon") -> None:
    """The root logger of this process: ``level`` (debug|info|warning|error) on stderr, as
    ``log_format`` says."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    writer = NonBlockingWriter.of_fd(sys.stderr.fileno())
    handler: logging.Handler = (logging.StreamHandler(sys.stderr) if writer is None
                                else NonBlockingHandler(writer))
    if log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {process} %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
