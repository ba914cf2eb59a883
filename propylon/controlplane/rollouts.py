"""Which IR each proxy of each Gateway is served: the latest translation, or the fleet's
stable version while a progressive rollout (``propylon.controlplane.rollout``) is under way
or after it was rolled back.

``Rollouts`` keeps per Gateway the stable snapshot (the one every proxy ran before the latest
translation) and, when the Gateway has ``spec.rollout``, the ``Rollout`` of the latest
version. Without ``spec.rollout`` the latest version is the stable one at once.

Rollout state lives in this replica's memory: a restarted control plane starts with the
latest version as stable (docs/controlplane.md, "Progressive rollout").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from propylon import ir
from propylon.config import Resource
from propylon.config.resources import Gateway
from propylon.controlplane.rollout import Phase, Rollout, RolloutRefused, RolloutSpec

Served = tuple[ir.SnapshotIR, str]  # a snapshot and its JSON text


def rollout_specs(resources: list[Resource]) -> dict[str, RolloutSpec]:
    """Gateway key -> its rollout settings, for the Gateways that have them."""
    return {r.key: RolloutSpec.of(r.spec.rollout) for r in resources
            if isinstance(r, Gateway) and r.spec.rollout is not None}


@dataclass
class Rollouts:
    stable: dict[str, Served] = field(default_factory=dict)
    current: dict[str, Rollout] = field(default_factory=dict)

    def update(self, latest: Mapping[str, Served], specs: Mapping[str, RolloutSpec],
               now: float) -> None:
        """After a translation: start a rollout for each Gateway whose version changed and
        that has ``spec.rollout``; Gateways without it move to the latest version."""
        for key in set(self.stable) - set(latest):
            self.stable.pop(key)
            self.current.pop(key, None)
        for key, served in latest.items():
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
