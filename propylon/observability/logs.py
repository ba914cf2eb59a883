"""The gateway's own logs: one record per line, as text or as JSON (``--log-format``).

JSON records carry ``time`` (epoch seconds), ``level``, ``logger``, ``process`` (``propylon``
for the supervisor or the control plane, ``worker[PID]`` for a worker), ``message`` and, when
there is one, ``exception`` (the traceback as one string). Text records keep the historical
shape; a traceback's lines follow the record. Log collectors want the JSON form: a multi-line
traceback is one record there.
"""

from __future__ import annotations

import json
import logging
import sys

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


def configure_logging(level: str, log_format: str = "text", process: str = "propylon") -> None:
    """The root logger of this process: ``level`` (debug|info|warning|error) on stderr, as
    ``log_format`` says."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {process} %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
