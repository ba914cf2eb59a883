"""Failover between priority groups: how much of the traffic each group takes (Envoy's
priority levels, ``failoverThreshold`` in place of the overprovisioning factor).

- A group's health is its share of usable endpoints divided by the threshold, capped at 1:
  with ``failoverThreshold: 70`` a group with 70 % or more of its endpoints usable is whole
  (Envoy's default overprovisioning factor 1.4 is a threshold of 71.4 %); a group with no
  endpoints (a name not resolved yet) has health 0.
- Loads are handed out in priority order: group 0 takes its health, group 1 takes its health
  of what is left, and so on, so traffic spills to the next group in proportion as the groups
  before it fall short, and comes back as they recover.
- When the healths add up to less than 1, every group's load is its health over their sum
  (Envoy's normalised total health), so no traffic is left over.
- Panic: when that total (capped at 1) is under ``panic_threshold`` percent, the groups keep
  these loads but each balances over all its endpoints, usable or not; with no usable
  endpoint anywhere, all traffic goes to the first group that has endpoints.
- Loads are integers in per-mille that add up to exactly 1000 (largest remainders), so a
  smooth weighted schedule gives each group its exact share.
"""

from __future__ import annotations

from collections.abc import Sequence

SCALE = 1000  # loads are per-mille


def group_health(usable: int, total: int, threshold: float) -> float:
    """A group's health in [0, 1]: its usable share over ``threshold`` percent, capped."""
    if total <= 0 or usable <= 0:
        return 0.0
    if threshold <= 0:
        return 1.0
    return min(1.0, usable * 100.0 / (total * threshold))


def priority_loads(
    usable: Sequence[int], totals: Sequence[int], threshold: float, panic_threshold: float
) -> tuple[list[int], bool]:
    """(per-mille load of each group, panic) from each group's usable and total endpoints."""
    health = [group_health(u, t, threshold) for u, t in zip(usable, totals, strict=True)]
    total = sum(health)
    if total <= 0:
        loads = [0] * len(health)
        first = next((i for i, t in enumerate(totals) if t > 0), 0)
        if loads:
            loads[first] = SCALE
        return loads, True
    panic = min(1.0, total) * 100.0 < panic_threshold
    if total < 1.0:
        shares = [h / total for h in health]
    else:
        shares, left = [], 1.0
        for h in health:
            take = min(h, left)
            shares.append(take)
            left -= take
    return _per_mille(shares), panic


def _per_mille(shares: Sequence[float]) -> list[int]:
    """Shares adding up to 1 as integers adding up to ``SCALE`` (largest remainder first)."""
    exact = [s * SCALE for s in shares]
    loads = [int(x) for x in exact]
    short = SCALE - sum(loads)
    by_remainder = sorted(range(len(exact)), key=lambda i: loads[i] - exact[i])
    for i in by_remainder[:short]:
        loads[i] += 1
    return loads
