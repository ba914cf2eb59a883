"""Endpoint health as one worker sees it: active-check verdicts and passive ejections.

Health lives in a ``HealthRegistry`` keyed by (upstream key, endpoint "address:port"), not in
the compiled configuration, so a reload keeps what is known about each endpoint. The hot path
never consults it: a cluster rebuilds its balancer over the usable endpoints whenever the set
changes (a verdict arrives, an endpoint is ejected or its ejection ends), so picking stays as
cheap as with no health checking at all.

Passive health (outlier detection): ``consecutive_errors`` failures in a row (5xx answers,
connect failures, resets, timeouts) eject an endpoint for ``base_ejection_time`` times the
number of times it has been ejected, capped at ``max_ejection_time``, and never more than
``max_ejection_percent`` of an upstream's endpoints at once. Ejections are per worker.

Panic mode: when fewer than ``panic_threshold`` percent of the endpoints are usable, the
balancer uses all of them, since sending traffic to possibly-unhealthy endpoints beats
answering 503 to everyone (Envoy's healthy panic threshold).
"""

from __future__ import annotations

from dataclasses import dataclass


class EndpointHealth:
    __slots__ = ("consecutive_errors", "ejected_until", "ejections", "healthy")

    def __init__(self) -> None:
        self.healthy = True  # the active checks' verdict (endpoints start healthy)
        self.ejected_until = 0.0  # monotonic time a passive ejection ends
        self.ejections = 0  # how many times it was ejected (grows the ejection time)
        self.consecutive_errors = 0

    def usable(self, now: float) -> bool:
        return self.healthy and self.ejected_until <= now


class HealthRegistry:
    """Every endpoint's health in one worker, across configuration versions."""

    __slots__ = ("states",)

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], EndpointHealth] = {}

    def get(self, upstream: str, endpoint: str) -> EndpointHealth:
        key = (upstream, endpoint)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = EndpointHealth()
        return state

    def set_verdict(self, upstream: str, endpoint: str, healthy: bool) -> bool:
        """Record an active-check verdict; True if it changed."""
        state = self.get(upstream, endpoint)
        changed = state.healthy != healthy
        state.healthy = healthy
        return changed


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    consecutive_errors: int
    base_ejection_time: float
    max_ejection_time: float
    max_ejection_percent: float

    def ejection_time(self, ejections: int) -> float:
        return min(self.base_ejection_time * ejections, self.max_ejection_time)
