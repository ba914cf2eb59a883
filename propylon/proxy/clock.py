"""A coarse monotonic clock for timeouts measured in seconds (idle connections, slow request
heads): the worker's sweeper advances it twice a second, so the request path reads a float
instead of calling ``time.monotonic()`` several times per request."""

from __future__ import annotations

import time


class CoarseClock:
    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = time.monotonic()

    def tick(self) -> float:
        self.now = time.monotonic()
        return self.now


CLOCK = CoarseClock()
