"""The progressive rollout state machine, without sockets: records in, targets out."""

from __future__ import annotations

from typing import Any

import pytest

from propylon.controlplane.rollout import (
    Counts,
    Phase,
    Rollout,
    RolloutRefused,
    RolloutSpec,
    proxy_order,
    traffic,
    wanted,
)
from propylon.proxy.agent import VersionTraffic

PROXIES = [f"p{i}" for i in range(10)]
SPEC = RolloutSpec(steps=(10, 50, 100), interval=10.0, max_error_ratio=0.01, min_requests=100)


def record(counts: dict[str, tuple[int, int]], **extra: Any) -> dict[str, Any]:
    return {"health": {"traffic": {v: {"requests": r, "errors5xx": e}
                                   for v, (r, e) in counts.items()}}, **extra}


def fleet(rollout: Rollout, per_proxy: int, new_errors: int = 0,
          old_errors: int = 0) -> dict[str, dict[str, Any]]:
    """Every proxy served ``per_proxy`` requests on the version it was given."""
    return {p: record({rollout.candidate if p in rollout.given else rollout.stable:
                       (per_proxy, new_errors if p in rollout.given else old_errors)})
            for p in PROXIES}


def started(spec: RolloutSpec = SPEC) -> Rollout:
    rollout = Rollout("infra/edge", spec, "v1", "v2", started=0.0)
    rollout.observe(0.0, {p: record({"v1": (1000, 5)}) for p in PROXIES}, PROXIES)
    return rollout


@pytest.mark.parametrize(("share", "connected", "expected"), [
    pytest.param(10, 10, 1, id="ten-percent-of-ten"),
    pytest.param(10, 3, 1, id="at-least-one"),
    pytest.param(50, 3, 2, id="rounded-up"),
    pytest.param(100, 7, 7, id="all"),
    pytest.param(10, 0, 0, id="nobody-connected"),
])
def test_wanted(share: int, connected: int, expected: int) -> None:
    assert wanted(share, connected) == expected


def test_order_is_deterministic_and_independent_of_input_order() -> None:
    assert proxy_order("a/b", PROXIES) == proxy_order("a/b", list(reversed(PROXIES)))
    assert proxy_order("a/b", PROXIES) != proxy_order("a/c", PROXIES)


def test_first_step_gives_one_proxy_and_baseline_ignores_earlier_traffic() -> None:
    rollout = started()
    assert len(rollout.given) == 1
    first = next(iter(rollout.given))
    assert first == proxy_order("infra/edge", PROXIES)[0]
    assert rollout.target(first) == "v2"
    assert all(rollout.target(p) == "v1" for p in PROXIES if p != first)
    assert rollout.old == Counts()  # the 1000 requests before the start are the baseline


def test_good_change_widens_after_each_interval_and_completes() -> None:
    rollout = started()
    assert rollout.observe(5.0, fleet(rollout, 1000), PROXIES) is False  # interval not over
    assert rollout.observe(10.0, fleet(rollout, 1100), PROXIES) is True
    assert (rollout.step, len(rollout.given)) == (1, 5)
    assert rollout.observe(20.0, fleet(rollout, 1200), PROXIES) is True
    assert (rollout.step, len(rollout.given)) == (2, 10)
    assert rollout.observe(30.0, fleet(rollout, 1300), PROXIES) is True
    assert rollout.phase is Phase.COMPLETE
    assert all(rollout.target(p) == "v2" for p in PROXIES)
    assert [e["event"] for e in rollout.events] == [
        "started", "given", "step", "given", "step", "given", "complete"]


def test_bad_change_rolls_back_on_the_first_step() -> None:
    rollout = started()
    assert rollout.observe(3.0, fleet(rollout, 200, new_errors=20, old_errors=1), PROXIES)
    assert rollout.phase is Phase.ROLLED_BACK
    assert "exceeds" in rollout.reason and "maxErrorRatio 0.01" in rollout.reason
    assert all(rollout.target(p) == "v1" for p in PROXIES)
    assert rollout.observe(20.0, fleet(rollout, 300), PROXIES) is False  # over for good


def test_errors_on_both_versions_alike_do_not_roll_back() -> None:
    rollout = started()
    rollout.observe(10.0, fleet(rollout, 1200, new_errors=30, old_errors=25), PROXIES)
    assert rollout.phase is Phase.PROGRESSING and rollout.step == 1


def test_no_verdict_and_no_widening_below_min_requests() -> None:
    rollout = started()
    assert not rollout.observe(10.0, fleet(rollout, 50, new_errors=50), PROXIES)
    assert rollout.phase is Phase.PROGRESSING and rollout.step == 0
    assert rollout.reason == "waiting for 100 requests on the new version (50 so far)"


def test_a_nack_of_the_candidate_rolls_back() -> None:
    rollout = started()
    first = next(iter(rollout.given))
    records = fleet(rollout, 0)
    records[first].update(state="NACK", lastNackVersion="v2", lastError="bad regex")
    rollout.observe(1.0, records, PROXIES)
    assert rollout.phase is Phase.ROLLED_BACK and "bad regex" in rollout.reason


def test_pause_holds_the_step_resume_restarts_the_interval_abort_returns_all() -> None:
    rollout = started()
    rollout.pause(1.0)
    assert not rollout.observe(15.0, fleet(rollout, 1500), PROXIES)
    assert rollout.step == 0
    with pytest.raises(RolloutRefused):
        rollout.pause(16.0)
    rollout.resume(16.0)
    rollout.observe(20.0, fleet(rollout, 1600), PROXIES)
    assert rollout.step == 0  # 4 s into the restarted interval
    rollout.observe(26.0, fleet(rollout, 1700), PROXIES)
    assert rollout.step == 1
    rollout.abort(27.0)
    assert rollout.phase is Phase.ABORTED and all(rollout.target(p) == "v1" for p in PROXIES)
    with pytest.raises(RolloutRefused):
        rollout.resume(28.0)


def test_a_proxy_that_connects_mid_step_is_counted() -> None:
    rollout = Rollout("infra/edge", RolloutSpec(steps=(50, 100)), "v1", "v2", started=0.0)
    rollout.observe(0.0, {}, PROXIES[:2])
    assert len(rollout.given) == 1
    rollout.observe(1.0, {}, PROXIES[:4])
    assert len(rollout.given) == 2


@pytest.mark.parametrize("health", [
    pytest.param(None, id="no-health"),
    pytest.param({"traffic": {"v2": {"requests": "x"}}}, id="not-a-number"),
    pytest.param({"traffic": {"v2": 3}}, id="not-an-object"),
])
def test_traffic_of_a_bad_record_is_zero(health: Any) -> None:
    assert traffic({"health": health}, "v2") == Counts()


def test_version_traffic_gives_growth_to_the_running_version() -> None:
    counts = VersionTraffic(keep=2)
    counts.tally(None, (10, 1))  # before any install: a baseline only
    counts.tally("v1", (30, 2))
    counts.tally("v2", (35, 4))
    counts.tally("v2", (5, 0))  # a replaced worker restarted its counters
    counts.tally("v3", (8, 3))
    assert counts.to_json() == {"v2": {"requests": 5, "errors5xx": 2},
                                "v3": {"requests": 3, "errors5xx": 3}}


def test_a_rollout_with_no_proxy_connected_completes_at_once() -> None:
    rollout = Rollout("infra/edge", SPEC, "v1", "v2", started=0.0)
    assert rollout.observe(0.5, {}, [])
    assert rollout.phase is Phase.COMPLETE and rollout.target("late") == "v2"
