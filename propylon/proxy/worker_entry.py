"""What a worker process is spawned with, and what its supervisor and it agree on, apart from
the worker's own modules: the supervisor never serves a request, so its process does not
import the data plane (a tenth of a second of its start-up, before it reads any file)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

DELTA_REFUSED = "no delta base"  # the nack of a delta this worker cannot apply: send it all


def run_worker(conn: Connection, access_log: str, log_level: str, log_format: str = "text",
               access_log_format: str = "json") -> None:
    """The target of a spawned worker process: ``proxy.worker.worker_main``."""
    from propylon.proxy.worker import worker_main

    worker_main(conn, access_log, log_level, log_format, access_log_format)
