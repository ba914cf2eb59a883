"""When a failed try is worth another one, and how long to wait first (pure logic).

Conditions a route lists in ``retries.on`` (Envoy's vocabulary):
- ``connect-failure``: no connection could be made (refused, unreachable, connect timeout);
- ``reset``: the connection closed or broke before a response head arrived;
- ``timeout``: the try exceeded ``perTryTimeout``;
- ``gateway-error``: 502, 503 or 504 answers, plus the three failures above;
- ``5xx``: any 5xx answer, plus the three failures above;
and ``retries.statuses`` lists further answers worth retrying (429, say). gRPC calls may be
retried on the ``grpc-status`` of a Trailers-Only answer: ``cancelled``,
``deadline-exceeded``, ``internal``, ``resource-exhausted``, ``unavailable``.

Whether a retry may happen at all (attempts left, a replayable body, the retry budget, the
response not yet started) is the exchange's business; this module only classifies.
"""

from __future__ import annotations

import random
from typing import Final

from propylon.ir import RetryIR

CONNECT_FAILURE: Final = "connect-failure"
RESET: Final = "reset"
TIMEOUT: Final = "timeout"
STATUS: Final = "status"
GRPC: Final = "grpc"
GRPC_RETRY_CODES = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}
_FAILURES = frozenset({CONNECT_FAILURE, RESET, TIMEOUT})


class RetryPolicy:
    """A route's retry settings, compiled."""

    __slots__ = (
        "attempts",
        "backoff_base",
        "backoff_max",
        "budget_min",
        "budget_ratio",
        "failures",
        "grpc_codes",
        "per_try_timeout",
        "statuses",
    )

    def __init__(self, spec: RetryIR) -> None:
        on = set(spec.on)
        self.attempts = spec.attempts
        self.per_try_timeout = spec.per_try_timeout
        self.backoff_base = spec.backoff_base
        self.backoff_max = spec.backoff_max
        self.budget_ratio = spec.budget_percent / 100.0
        self.budget_min = spec.budget_min_concurrency
        broad = bool(on & {"5xx", "gateway-error"})
        self.failures = _FAILURES if broad else frozenset(on & _FAILURES)
        statuses = set(spec.statuses)
        if "gateway-error" in on:
            statuses |= {502, 503, 504}
        if "5xx" in on:
            statuses |= set(range(500, 600))
        self.statuses = frozenset(statuses)
        self.grpc_codes = frozenset(code for name, code in GRPC_RETRY_CODES.items() if name in on)

    def retries_on(self, condition: str, status: int = 0) -> bool:
        if condition == STATUS:
            return status in self.statuses
        if condition == GRPC:
            return status in self.grpc_codes
        return condition in self.failures

    def retries_status(self, status: int) -> bool:
        return status in self.statuses

    def backoff(self, tries_done: int) -> float:
        """Exponential backoff with full jitter before try number ``tries_done + 1``."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (tries_done - 1)))
        return random.uniform(0, ceiling)

    def budget_allows(self, retries_active: int, requests_active: int) -> bool:
        """At most ``percent`` of the upstream's active requests may be retries (and never
        fewer than ``minConcurrency`` at once)."""
        return retries_active < max(self.budget_min, self.budget_ratio * requests_active)
