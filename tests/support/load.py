"""Bounded load from client threads: requests sent back to back, outcomes counted.

``LoadClient`` sends ``GET`` requests on a keep-alive connection for at most ``duration``
seconds and ``max_requests`` requests, reconnecting after any failure. A failure is a
transport error (refused, reset, timeout, truncated answer) or a status in ``bad_statuses``
(every 5xx by default). ``concurrent`` runs one request per thread, all released at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tests.support.client import RawClient, roundtrip
from tests.support.h1 import Response


@dataclass
class LoadResult:
    total: int = 0
    errors: int = 0
    statuses: Counter = field(default_factory=Counter)
    served_by: Counter = field(default_factory=Counter)
    error_kinds: Counter = field(default_factory=Counter)


class LoadClient(threading.Thread):
    def __init__(
        self,
        port: int,
        host: str,
        *,
        duration: float = 3.0,
        max_requests: int = 20_000,
        path: str = "/load",
        timeout: float = 5.0,
    ) -> None:
        super().__init__(name=f"load-{host}", daemon=True)
        self.port = port
        self.host = host
        self.duration = duration
        self.max_requests = max_requests
        self.path = path
        self.timeout = timeout
        self.result = LoadResult()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.result.total, self.result.errors

    def run(self) -> None:
        deadline = time.monotonic() + self.duration
        client: RawClient | None = None
        for _ in range(self.max_requests):
            if self.stop_event.is_set() or time.monotonic() >= deadline:
                break
            try:
                if client is None:
                    client = RawClient(self.port, timeout=self.timeout)
                client.request("GET", self.path, host=self.host)
                response = client.read_final()
            except (OSError, AssertionError, ValueError) as exc:
                self._count(None, type(exc).__name__)
                if client is not None:
                    client.close()
                client = None
                continue
            self._count(response, "")
            if (response.header("connection") or "").lower() == "close":
                client.close()
                client = None
        if client is not None:
            client.close()

    def _count(self, response: Response | None, error: str) -> None:
        with self.lock:
            self.result.total += 1
            if response is None:
                self.result.errors += 1
                self.result.error_kinds[error] += 1
                return
            self.result.statuses[response.status] += 1
            if response.status >= 500:
                self.result.errors += 1
                self.result.error_kinds[f"status {response.status}"] += 1
            else:
                self.result.served_by[response.header("x-upstream") or ""] += 1

    def stop(self) -> None:
        self.stop_event.set()


def concurrent(
    count: int, send: Callable[[], Response], timeout: float = 30.0
) -> list[tuple[Response | BaseException, float]]:
    """Run ``send`` in ``count`` threads released together; (response or error, seconds)."""
    barrier = threading.Barrier(count)

    def one() -> tuple[Response | BaseException, float]:
        barrier.wait(timeout)
        start = time.monotonic()
        try:
            return send(), time.monotonic() - start
        except Exception as exc:  # reported to the caller, never raised from a thread
            return exc, time.monotonic() - start

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(one) for _ in range(count)]
        return [f.result(timeout) for f in futures]


def get(port: int, host: str, path: str = "/", **kwargs) -> Response:
    return roundtrip(port, "GET", path, host=host, **kwargs)
