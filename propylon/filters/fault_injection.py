"""The ``faultInjection`` policy: delay and/or abort a percentage of requests.

Spec: ``{delay: {fixed: seconds, percent}, abort: {status, percent, body}}``. Each request
draws once for the delay and once for the abort (Envoy's order: the delay happens first, then
the abort decision takes effect). Delays are awaited without blocking the event loop; an
aborted request never reaches the upstream and is answered with ``x-propylon-fault: abort``
(status 200-599; a 204 or 304 without the body, which those statuses cannot carry).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable

from propylon.filters.base import Filter, FilterContext, FilterEnv, LocalResponse
from propylon.policies.traffic import FaultInjectionPolicy


class FaultInjectionFilter(Filter):
    policy_type = "faultInjection"
    settings_model = FaultInjectionPolicy

    __slots__ = ("abort", "abort_ratio", "delay", "delay_ratio")

    def __init__(
        self, source: str, delay: float, delay_ratio: float, abort: LocalResponse | None,
        abort_ratio: float,
    ) -> None:
        super().__init__(source)
        self.delay = delay
        self.delay_ratio = delay_ratio
        self.abort = abort
        self.abort_ratio = abort_ratio

    @classmethod
    def from_spec(
        cls, settings: FaultInjectionPolicy, source: str, env: FilterEnv
    ) -> FaultInjectionFilter:
        delay, abort = settings.delay, settings.abort
        answer = None
        if abort is not None:
            # 204 and 304 have no body (RFC 9110 15.3.5, 15.4.5): bytes after their head would
            # be read as the start of the next response on the connection
            body = b"" if abort.status in (204, 304) else abort.body.encode() + b"\n"
            answer = LocalResponse(abort.status, body, [(b"x-propylon-fault", b"abort")])
        return cls(
            source,
            delay.fixed if delay is not None else 0.0,
            delay.percent / 100 if delay is not None else 0.0,
            answer,
            abort.percent / 100 if abort is not None else 0.0,
        )

    def on_request(
        self, ctx: FilterContext
    ) -> LocalResponse | Awaitable[LocalResponse | None] | None:
        abort = self.abort if self.abort_ratio and random.random() < self.abort_ratio else None
        if self.delay_ratio and random.random() < self.delay_ratio:
            return self._delayed(abort)
        return abort

    async def _delayed(self, answer: LocalResponse | None) -> LocalResponse | None:
        await asyncio.sleep(self.delay)
        return answer
