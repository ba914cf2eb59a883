"""Text the CLI prints for ``diff`` and ``status`` (pure functions over API answers)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from propylon.config import Resource, load_data
from propylon.controlplane.gitops import (
    Change,
    Key,
    LocalResource,
    affected_gateways,
    key_of,
    text_diff,
)
from propylon.controlplane.resources import strip_server_fields
from propylon.translate import translate

_MARK = {"create": "+", "update": "~", "delete": "-"}


def gateways_after(local: Sequence[LocalResource],
                   remote: Sequence[dict[str, Any]]) -> dict[Key, list[str]]:
    """Which Gateways would select each resource once ``local`` is applied. Remote resources
    whose redacted answer no longer validates (secrets) are left out of this estimate."""
    merged: dict[Key, Resource] = {item.key: item.model for item in local}
    for data in remote:
        if key_of(data) in merged:  # the local copy is what there will be
            continue
        clean, _ = strip_server_fields(data)
        loaded = load_data(clean)
        if loaded.ok:
            merged[key_of(data)] = loaded.resources[0]
    snapshot = translate(list(merged.values()), sealed=False)  # its version is not shown
    return {(s.kind, *s.key.split("/", 1)): list(s.gateways)  # type: ignore[misc]
            for s in snapshot.statuses}


def gateways_before(status: dict[str, Any]) -> dict[Key, list[str]]:
    return {(r["kind"], r["namespace"], r["name"]): list(r.get("gateways", []))
            for r in status.get("resources", [])}


def render_diff(plan: Sequence[Change], local: Sequence[LocalResource],
                remote: Sequence[dict[str, Any]],
                status: dict[str, Any]) -> tuple[list[str], bool]:
    """Lines grouped per Gateway reached (before or after), then the plan's counts, and
    whether anything changes. Pruned resources leave the estimate of Gateways after."""
    changes = [c for c in plan if c.action != "unchanged"]
    if not changes:
        return ["no changes", plan_summary(plan)], False
    pruned = {c.key for c in changes if c.action == "delete"}
    kept = [r for r in remote if key_of(r) not in pruned]
    before, after = gateways_before(status), gateways_after(local, kept)
    groups: dict[str, list[Change]] = {}
    for change in changes:
        for gateway in affected_gateways(change, before, after) or ["(no Gateway)"]:
            groups.setdefault(gateway, []).append(change)
    lines: list[str] = []
    for gateway in sorted(groups):
        lines.append(f"Gateway {gateway}:" if gateway != "(no Gateway)"
                     else "Not served by any Gateway:")
        for change in groups[gateway]:
            lines.append(f"  {_MARK[change.action]} {change.ref} ({change.action})")
            lines += [f"      {line}" for line in text_diff(change) if change.action == "update"]
    return [*lines, plan_summary(plan)], True


def plan_summary(plan: Sequence[Change]) -> str:
    counts = {action: sum(c.action == action for c in plan)
              for action in ("create", "update", "unchanged", "delete")}
    return "plan: " + ", ".join(f"{n} to {a}" if a != "unchanged" else f"{n} unchanged"
                                for a, n in counts.items())


def render_health(health: dict[str, Any] | None) -> list[str]:
    """A proxy's endpoint health, as its last HEALTH report gave it."""
    if not health:
        return []
    lines = []
    for ep in health.get("endpoints", []):
        state = "healthy" if ep.get("healthy") else "UNHEALTHY"
        if ep.get("ejected_in_workers"):
            state += f", ejected in {ep['ejected_in_workers']} worker(s)"
        lines.append(f"      {ep['upstream']} {ep['endpoint']}: {state}"
                     f" ({ep.get('ejections', 0)} ejections)")
    for upstream in health.get("panic", []):
        lines.append(f"      {upstream}: PANIC (too few usable endpoints: using all)")
    for upstream, retries in sorted(health.get("retries", {}).items()):
        lines.append(f"      {upstream}: {retries} retries")
    return lines


def render_rollout(rollout: dict[str, Any] | None) -> list[str]:
    """A Gateway's progressive rollout: phase, step and share, ratios, why it waits or ended."""
    if not rollout:
        return []
    new, old = rollout["newVersion"], rollout["oldVersion"]
    lines = [
        f"    rollout {rollout['stable']} -> {rollout['candidate']}: {rollout['phase']}, step "
        f"{rollout['step']}/{len(rollout['steps'])} ({rollout['share']}%), "
        f"{len(rollout['given'])}/{rollout.get('proxiesConnected', 0)} proxies given",
        f"      5xx ratio new {new['ratio']:.4f} ({new['errors5xx']}/{new['requests']}), "
        f"old {old['ratio']:.4f} ({old['errors5xx']}/{old['requests']}), "
        f"bound +{rollout['maxErrorRatio']}",
    ]
    if rollout.get("reason"):
        lines.append(f"      {rollout['reason']}")
    return lines


def desired_version(fleet: dict[str, Any]) -> str | None:
    """The version the fleet's proxies are meant to run: the translated one, but the stable
    one after a rollout of the translated one was rolled back or aborted."""
    rollout = fleet.get("rollout")
    if rollout and rollout.get("phase") in ("RolledBack", "Aborted"):
        return str(rollout["stable"])
    version = fleet.get("version")
    return None if version is None else str(version)


def render_status(data: dict[str, Any]) -> list[str]:
    lines = ["GATEWAYS"]
    now = time.time()
    for fleet in data.get("gateways", []):
        lines.append(f"  {fleet['gateway']}  desired version {desired_version(fleet) or '-'}")
        if fleet.get("note"):
            lines.append(f"    {fleet['note']}")
        lines += render_rollout(fleet.get("rollout"))
        for p in fleet.get("proxies", []):
            state = "connected" if p.get("connected") else "disconnected"
            seen = f"{now - float(p.get('lastSeen', now)):.0f}s ago"
            lines.append(f"    proxy {p['id']}: runs {p.get('version') or '-'}, {state} "
                         f"(seen {seen}), last {p.get('state', '-')}")
            if p.get("lastError"):
                lines.append(f"      last NACK ({p.get('lastNackVersion')}): {p['lastError']}")
            lines += render_health(p.get("health"))
        if not fleet.get("proxies"):
            lines.append("    no proxy has connected")
    invalid = [r for r in data.get("resources", []) if r["state"] != "Accepted"]
    lines.append("INVALID RESOURCES" if invalid else "INVALID RESOURCES: none")
    for r in invalid:
        lines.append(f"  {r['kind']} {r['namespace']}/{r['name']}: {'; '.join(r['reasons'])}")
    return lines
