"""Which IR each proxy of each Gateway is served: the latest translation, or the fleet's
stable version while a progressive rollout (``propylon.controlplane.rollout``) is under way
or after it was rolled back.

``Rollouts`` keeps per Gateway the stable snapshot (the one every proxy ran before the latest
translation) and, when the Gateway has ``spec.rollout``, the ``Rollout`` of the latest
version. Without ``spec.rollout`` the latest version is the stable one at once.

Each Gateway's rollout is also kept in the store (``record``: phase, stable version,
candidate, who was given it, the baseline; with the stable version's IR text beside it), so
that a restarted control plane serves the stable version again rather than the latest one:
``saved`` holds what the store had at start, and ``update`` restores each Gateway from it the
first time it sees the Gateway (docs/controlplane.md, "Progressive rollout", *Restarts and
replicas*). ``adopt`` takes the end of a rollout another replica decided.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from propylon import ir
from propylon.config import Resource
from propylon.config.resources import Gateway
from propylon.controlplane.rollout import (
    ACTIVE,
    Phase,
    Rollout,
    RolloutRefused,
    RolloutSpec,
)

log = logging.getLogger("propylon.controlplane")

Served = tuple[ir.SnapshotIR, str]  # a snapshot and its JSON text
# what the store kept of a Gateway: its rollout record, and its stable version's IR if kept
Saved = tuple[dict[str, Any], Served | None]


def rollout_specs(resources: list[Resource]) -> dict[str, RolloutSpec]:
    """Gateway key -> its rollout settings, for the Gateways that have them."""
    return {r.key: RolloutSpec.of(r.spec.rollout) for r in resources
            if isinstance(r, Gateway) and r.spec.rollout is not None}


@dataclass
class Rollouts:
    stable: dict[str, Served] = field(default_factory=dict)
    current: dict[str, Rollout] = field(default_factory=dict)
    saved: dict[str, Saved] = field(default_factory=dict)  # the store's, until restored

    def update(self, latest: Mapping[str, Served], specs: Mapping[str, RolloutSpec],
               now: float) -> None:
        """After a translation: start a rollout for each Gateway whose version changed and
        that has ``spec.rollout``; Gateways without it move to the latest version. A Gateway
        seen for the first time is restored from ``saved``."""
        for key in set(self.stable) - set(latest):
            self.stable.pop(key)
            self.current.pop(key, None)
        for key, served in latest.items():
            saved = self.saved.pop(key, None)
            if saved is not None and key not in self.stable and key in specs:
                self._restore(key, saved, served, specs[key], now)
            spec, stable = specs.get(key), self.stable.get(key)
            rollout = self.current.get(key)
            version = served[0].version
            if spec is None or stable is None:
                self.stable[key] = served
                self.current.pop(key, None)
            elif stable[0].version == version:  # unchanged, promoted, or a revert
                self.stable[key] = served
                if rollout is not None and rollout.candidate != version:
                    self.current.pop(key)
            elif rollout is None or rollout.candidate != version:
                self.current[key] = Rollout(key, spec, stable[0].version, version, now)
            else:
                rollout.spec = _clamped(spec, rollout)

    def _restore(self, key: str, saved: Saved, latest: Served, spec: RolloutSpec,
                 now: float) -> None:
        """The Gateway as the store kept it: its stable version (with the IR kept beside the
        record, unless it is the latest version) and, when the latest version is still its
        candidate, its rollout (an active one goes on, its step's interval started again).
        A candidate that changed meanwhile gets a new rollout from the stable version
        (``update``); a stable IR that was not kept leaves the latest version stable, as
        before the store kept rollouts (logged)."""
        record, stable_ir = saved
        version, stable = latest[0].version, str(record.get("stable", ""))
        state = record.get("rollout")
        try:
            rollout = (Rollout.from_state(key, spec, state)
                       if isinstance(state, dict) and state.get("candidate") == version
                       else None)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("the stored rollout of %s is unreadable (%s): not restored", key, exc)
            rollout = None
        if stable == version:
            self.stable[key] = latest
            if rollout is not None and rollout.phase is Phase.COMPLETE:
                self.current[key] = rollout  # shown as it ended
            return
        if stable_ir is None or stable_ir[0].version != stable:
            log.error("the IR of %s's stable version %s was not kept: its latest version %s "
                      "is the stable one", key, stable, version)
            return
        self.stable[key] = stable_ir
        if rollout is not None and rollout.stable == stable:
            rollout.restarted(now, "the control plane restarted")
            self.current[key] = rollout
        log.info("restored %s: stable version %s%s", key, stable,
                 f", rollout of {version} {rollout.phase.value}" if rollout else "")

    def records(self) -> dict[str, dict[str, Any]]:
        """What the store should keep per Gateway: those with a rollout (the others have
        their latest version as the stable one, which a restart gives anyway)."""
        return {key: {"stable": self.stable[key][0].version, "candidate": rollout.candidate,
                      "phase": rollout.phase.value, "rollout": rollout.to_state()}
                for key, rollout in self.current.items() if key in self.stable}

    def adopt(self, key: str, record: Mapping[str, Any], now: float,
              latest: Mapping[str, Served]) -> bool:
        """The store says another replica ended the Gateway's rollout (same stable version
        and candidate; RolledBack, Aborted or Complete): end it here too. True when this
        changed which version some proxy should run."""
        rollout, state = self.current.get(key), record.get("rollout")
        if (rollout is None or not rollout.active or not isinstance(state, dict)
                or state.get("candidate") != rollout.candidate
                or state.get("stable") != rollout.stable):
            return False
        try:
            phase = Phase(str(record.get("phase")))
        except ValueError:
            return False
        if phase in ACTIVE:
            return False
        reason = str(state.get("reason", ""))
        changed = rollout.adopt(now, phase, f"{reason} (decided by another replica)"
                                if reason else "decided by another replica")
        if rollout.phase is Phase.COMPLETE and key in latest:
            self.stable[key] = latest[key]
        return changed

    def served(self, key: str, proxy: str, latest: Served) -> Served:
        """What ``proxy`` of Gateway ``key`` should run."""
        rollout = self.current.get(key)
        if rollout is None or rollout.target(proxy) == latest[0].version:
            return latest
        return self.stable.get(key, latest)

    def observe(self, now: float, records: Mapping[str, Mapping[str, Mapping[str, Any]]],
                connected_for: float, latest: Mapping[str, Served]) -> bool:
        """Advance every active rollout; True when some proxy's target changed."""
        changed = False
        for key, rollout in self.current.items():
            if not rollout.active:
                continue
            fleet = records.get(key, {})
            online = [p for p, r in fleet.items()
                      if now - float(r.get("lastSeen", 0)) < connected_for]
            changed = rollout.observe(now, fleet, online) or changed
            if rollout.phase is Phase.COMPLETE and key in latest:
                self.stable[key] = latest[key]
        return changed

    @property
    def active(self) -> list[Rollout]:
        return [r for r in self.current.values() if r.active]

    def act(self, key: str, action: str, now: float) -> Rollout:
        """``pause``, ``resume`` or ``abort`` the Gateway's rollout; RolloutRefused if there
        is none in a phase that allows it, KeyError for an unknown action."""
        rollout = self.current.get(key)
        if rollout is None:
            raise RolloutRefused(f"Gateway {key} has no rollout")
        {"pause": rollout.pause, "resume": rollout.resume, "abort": rollout.abort}[action](now)
        return rollout

    def to_json(self, key: str) -> dict[str, Any] | None:
        rollout = self.current.get(key)
        return rollout.to_json() if rollout else None


def _clamped(spec: RolloutSpec, rollout: Rollout) -> RolloutSpec:
    """New settings during a rollout: its step index stays within the new steps."""
    rollout.step = min(rollout.step, len(spec.steps) - 1)
    return spec
