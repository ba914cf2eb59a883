"""Progressive rollout of one Gateway's new IR version (``Gateway.spec.rollout``), sans-IO.

A ``Rollout`` decides, for each proxy, whether it gets the ``candidate`` (the newly translated
version) or stays on ``stable`` (the version the whole fleet ran before). ``observe`` is called
with the fleet's records (what the proxies reported; see ``propylon.proxy.agent``) every
second or so; it judges, widens and finishes; ``pause``, ``resume`` and ``abort`` are the
operator's. Nothing here reads a clock or the store: the caller passes ``now`` and records.

Invariants:
- Proxies are given the candidate in a fixed order (a hash of Gateway and proxy id), so the
  same proxies go first every time, and a proxy given the candidate keeps it until the rollout
  ends: ``given`` only grows while the rollout is active.
- At step ``i`` at least ``ceil(steps[i] * connected / 100)`` connected proxies hold the
  candidate (at least one); a proxy that connects mid-step is counted at the next observation.
- The 5xx ratios compared are over requests served since the rollout started: the candidate's
  on the proxies that run it, the stable version's on all proxies (their counters at the start
  are the baseline). A verdict needs ``minRequests`` requests on the candidate; until then
  the rollout does not widen (and says why).
- A rollback or abort sends every proxy back to ``stable``; the candidate is not given again
  unless translation publishes it again as a new rollout.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from propylon.config.gateway import Rollout as RolloutModel

MAX_EVENTS = 200


class Phase(StrEnum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    COMPLETE = "Complete"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"


ACTIVE = (Phase.PROGRESSING, Phase.PAUSED)


class RolloutRefused(Exception):
    """An operator action that does not apply to the rollout's phase."""


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    steps: tuple[int, ...] = (10, 50, 100)
    interval: float = 30.0
    max_error_ratio: float = 0.01
    min_requests: int = 100

    @classmethod
    def of(cls, model: RolloutModel) -> RolloutSpec:
        return cls(tuple(model.steps), model.interval, model.max_error_ratio,
                   model.min_requests)


@dataclass(frozen=True, slots=True)
class Counts:
    requests: int = 0
    errors: int = 0

    @property
    def ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.requests + other.requests, self.errors + other.errors)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(max(self.requests - other.requests, 0), max(self.errors - other.errors, 0))

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors5xx": self.errors,
                "ratio": round(self.ratio, 6)}


def traffic(record: Mapping[str, Any], version: str) -> Counts:
    """What one proxy reported serving under ``version`` (zero when it did not say)."""
    health = record.get("health")
    counts = health.get("traffic", {}).get(version) if isinstance(health, dict) else None
    if not isinstance(counts, dict):
        return Counts()
    try:
        return Counts(max(int(counts.get("requests", 0)), 0),
                      max(int(counts.get("errors5xx", 0)), 0))
    except (TypeError, ValueError):
        return Counts()


def proxy_order(gateway: str, proxies: list[str]) -> list[str]:
    """The order proxies are given a candidate in: stable across versions and replicas."""
    return sorted(proxies, key=lambda p: hashlib.sha256(f"{gateway}\0{p}".encode()).digest())


def wanted(share: int, connected: int) -> int:
    return max(math.ceil(share * connected / 100), 1) if connected else 0


@dataclass
class Rollout:
    gateway: str
    spec: RolloutSpec
    stable: str
    candidate: str
    started: float
    step: int = 0  # index into spec.steps
    step_started: float = 0.0
    phase: Phase = Phase.PROGRESSING
    reason: str = ""
    given: dict[str, float] = field(default_factory=dict)  # proxy -> when it got the candidate
    baseline: dict[tuple[str, str], Counts] = field(default_factory=dict)
    new: Counts = Counts()
    old: Counts = Counts()
    connected: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    _primed: bool = False

    def __post_init__(self) -> None:
        self.step_started = self.step_started or self.started
        self._event(self.started, "started", stable=self.stable, candidate=self.candidate)

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def share(self) -> int:
        return self.spec.steps[self.step]

    def target(self, proxy: str) -> str:
        """The version ``proxy`` should run now."""
        if self.phase is Phase.COMPLETE:
            return self.candidate
        if self.phase in ACTIVE and proxy in self.given:
            return self.candidate
        return self.stable

    # -- the control loop ----------------------------------------------------------------
    def observe(self, now: float, records: Mapping[str, Mapping[str, Any]],
                connected: list[str]) -> bool:
        """Judge, then widen when the step's interval is over; True when a proxy's target
        changed (the caller wakes the long-polls)."""
        if not self.active:
            return False
        if not self._primed:  # counters at the start are not the candidate's doing
            self.baseline = {(p, v): traffic(r, v) for p, r in records.items()
                             for v in (self.stable, self.candidate)}
            self._primed = True
            self.step_started = now  # the first step's interval starts when it is given
            if not connected:
                self.phase, self.reason = Phase.COMPLETE, "no proxy was connected at the start"
                self._event(now, "complete", reason=self.reason)
                return True
        self.connected = len(connected)
        self._count(records)
        refusal = self._refusal(records)
        if refusal:
            return self._end(now, Phase.ROLLED_BACK, refusal)
        if self._too_many_errors():
            return self._end(now, Phase.ROLLED_BACK, self._verdict())
        if self.phase is Phase.PAUSED:
            return False
        changed = self._top_up(now, connected)
        if now - self.step_started < self.spec.interval:
            return changed
        if self.new.requests < self.spec.min_requests:
            self.reason = (f"waiting for {self.spec.min_requests} requests on the new version "
                           f"({self.new.requests} so far)")
            return changed
        if self.step == len(self.spec.steps) - 1:
            self.phase, self.reason = Phase.COMPLETE, ""
            self._event(now, "complete", **self._ratios())
            return True
        self.step += 1
        self.step_started, self.reason = now, ""
        self._event(now, "step", step=self.step + 1, share=self.share, **self._ratios())
        return self._top_up(now, connected) or changed

    def _count(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        def since_start(proxy: str, record: Mapping[str, Any], version: str) -> Counts:
            return traffic(record, version) - self.baseline.get((proxy, version), Counts())

        new, old = Counts(), Counts()
        for proxy, record in records.items():
            new += since_start(proxy, record, self.candidate)
            old += since_start(proxy, record, self.stable)
        self.new, self.old = new, old

    def _refusal(self, records: Mapping[str, Mapping[str, Any]]) -> str:
        for proxy in self.given:
            record = records.get(proxy, {})
            if record.get("state") == "NACK" and record.get("lastNackVersion") == self.candidate:
                return f"proxy {proxy} refused {self.candidate}: {record.get('lastError', '')}"
        return ""

    def _too_many_errors(self) -> bool:
        return (self.new.requests >= max(self.spec.min_requests, 1)
                and self.new.ratio - self.old.ratio > self.spec.max_error_ratio)

    def _verdict(self) -> str:
        return (f"5xx ratio {self.new.ratio:.4f} on {self.candidate} ({self.new.errors}/"
                f"{self.new.requests}) exceeds {self.old.ratio:.4f} on {self.stable} "
                f"({self.old.errors}/{self.old.requests}) by more than maxErrorRatio "
                f"{self.spec.max_error_ratio}")

    def _top_up(self, now: float, connected: list[str]) -> bool:
        online = set(connected)
        holding = sum(1 for p in self.given if p in online)
        added = []
        for proxy in proxy_order(self.gateway, connected):
            if holding >= wanted(self.share, len(connected)):
                break
            if proxy not in self.given:
                self.given[proxy] = now
                added.append(proxy)
                holding += 1
        if added:
            self._event(now, "given", step=self.step + 1, share=self.share, proxies=added)
        return bool(added)

    # -- operator actions ----------------------------------------------------------------
    def pause(self, now: float) -> None:
        self._require(Phase.PROGRESSING, "pause")
        self.phase = Phase.PAUSED
        self._event(now, "paused")

    def resume(self, now: float) -> None:
        self._require(Phase.PAUSED, "resume")
        self.phase, self.step_started = Phase.PROGRESSING, now  # the interval starts again
        self._event(now, "resumed")

    def abort(self, now: float) -> None:
        if not self.active:
            raise RolloutRefused(f"cannot abort: the rollout of {self.candidate} is "
                                 f"{self.phase.value}")
        self._end(now, Phase.ABORTED, "aborted by an operator")

    def _require(self, phase: Phase, action: str) -> None:
        if self.phase is not phase:
            raise RolloutRefused(f"cannot {action}: the rollout of {self.candidate} is "
                                 f"{self.phase.value}")

    def _end(self, now: float, phase: Phase, reason: str) -> bool:
        self.phase, self.reason = phase, reason
        self._event(now, "rolledBack" if phase is Phase.ROLLED_BACK else "aborted",
                    reason=reason, proxies=list(self.given), **self._ratios())
        return True

    def _ratios(self) -> dict[str, Any]:
        return {"new": self.new.to_json(), "old": self.old.to_json()}

    def _event(self, now: float, event: str, **details: Any) -> None:
        self.events.append({"at": round(now, 3), "event": event, **details})
        del self.events[:-MAX_EVENTS]

    # -- what the store keeps (``rollouts.py``, a restart) --------------------------------
    def to_state(self) -> dict[str, Any]:
        """The rollout as the store keeps it: enough to go on after a restart, or on another
        replica. Ratios are not kept (they are counted again from ``baseline`` and the
        proxies' records), nor the reason of an active rollout (said again at each look):
        those of an ended one are."""
        return {
            "stable": self.stable, "candidate": self.candidate, "phase": self.phase.value,
            "step": self.step, "started": self.started, "stepStarted": self.step_started,
            "reason": "" if self.active else self.reason, "primed": self._primed,
            "connected": self.connected,
            "counts": None if self.active else [[c.requests, c.errors]
                                                for c in (self.new, self.old)],
            "given": [[proxy, at] for proxy, at in self.given.items()],
            "baseline": [[proxy, version, c.requests, c.errors]
                         for (proxy, version), c in self.baseline.items()],
            "events": list(self.events),
        }

    @classmethod
    def from_state(cls, gateway: str, spec: RolloutSpec, state: Mapping[str, Any]
                   ) -> Rollout:
        """A rollout ``to_state`` wrote, under the Gateway's settings now (its step kept
        within their steps). ValueError, KeyError or TypeError when it is not one."""
        rollout = cls(gateway, spec, str(state["stable"]), str(state["candidate"]),
                      float(state["started"]))
        rollout.phase = Phase(state["phase"])
        rollout.step = min(int(state["step"]), len(spec.steps) - 1)
        rollout.step_started = float(state["stepStarted"])
        rollout.reason = str(state.get("reason", ""))
        rollout._primed = bool(state.get("primed"))
        rollout.connected = int(state.get("connected", 0))
        if state.get("counts"):
            rollout.new, rollout.old = (Counts(int(r), int(e)) for r, e in state["counts"])
        rollout.given = {str(proxy): float(at) for proxy, at in state.get("given", [])}
        rollout.baseline = {(str(p), str(v)): Counts(int(r), int(e))
                            for p, v, r, e in state.get("baseline", [])}
        rollout.events = [dict(e) for e in state.get("events", [])][-MAX_EVENTS:]
        return rollout

    def restarted(self, now: float, why: str) -> None:
        """Taken over after a restart (or from another replica): an active rollout starts
        its step's interval again, since nobody judged it meanwhile."""
        if self.active:
            self.step_started = now
            self._event(now, "restarted", step=self.step + 1, share=self.share, reason=why)

    def adopt(self, now: float, phase: Phase, reason: str) -> bool:
        """Another replica ended this rollout (``phase`` is RolledBack, Aborted or Complete):
        end it here too. True when that changed it."""
        if not self.active or phase in ACTIVE:
            return False
        if phase is Phase.COMPLETE:
            self.phase, self.reason = phase, reason
            self._event(now, "complete", reason=reason)
            return True
        return self._end(now, phase, reason)

    # -- what the API shows --------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "stable": self.stable,
            "candidate": self.candidate,
            "step": self.step + 1,
            "steps": list(self.spec.steps),
            "share": self.share,
            "interval": self.spec.interval,
            "maxErrorRatio": self.spec.max_error_ratio,
            "minRequests": self.spec.min_requests,
            "startedAt": self.started,
            "stepStartedAt": self.step_started,
            "nextStepAt": self.step_started + self.spec.interval if self.active else None,
            "proxiesConnected": self.connected,
            "given": sorted(self.given, key=self.given.__getitem__),
            "newVersion": self.new.to_json(),
            "oldVersion": self.old.to_json(),
            "reason": self.reason,
            "timeline": list(self.events),
        }
