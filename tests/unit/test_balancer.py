"""Balancer policies: proportions, load awareness, ring stability, canary splits."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from propylon.runtime.balancer import POLICIES, WeightedChoice, make_balancer


@dataclass
class Ep:
    label: str
    weight: int = 1
    active: int = 0


@dataclass
class Addressed:
    address: str
    port: int
    weight: int = 1
    active: int = 0


@dataclass
class Anonymous:
    weight: int = 1
    active: int = 0


ROOT = Path(__file__).resolve().parents[2]


def eps(*weights: int) -> list[Ep]:
    return [Ep(f"10.0.0.{i}:80", w) for i, w in enumerate(weights)]


def picks(policy: str, endpoints: list[Ep], n: int, key: str | None = None) -> Counter[str]:
    balancer = make_balancer(policy, endpoints, rng=random.Random(7))
    return Counter(balancer.pick(key).label for _ in range(n))  # type: ignore[union-attr]


# --- every policy -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_single_endpoint_is_always_chosen(policy: str) -> None:
    only = Ep("only", 3)
    balancer = make_balancer(policy, [only, Ep("zero", 0)])
    assert all(balancer.pick(k) is only for k in (None, "a", "b"))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    "endpoints", [pytest.param([], id="none"), pytest.param(eps(0, 0), id="all-zero")]
)
def test_no_positive_weight_picks_none(policy: str, endpoints: list[Ep]) -> None:
    assert make_balancer(policy, endpoints).pick("k") is None


@pytest.mark.parametrize("policy", POLICIES)
def test_weight_zero_never_chosen(policy: str) -> None:
    balancer = make_balancer(policy, eps(1, 0, 2), rng=random.Random(5))
    seen = Counter(balancer.pick(f"k{i}").label for i in range(3_000))  # type: ignore[union-attr]
    assert set(seen) == {"10.0.0.0:80", "10.0.0.2:80"}


@pytest.mark.parametrize(
    ("policy", "weights", "error"),
    [
        pytest.param("fastest", (1,), ValueError, id="unknown-policy"),
        pytest.param("round_robin", (1, -1), ValueError, id="negative-weight"),
    ],
)
def test_invalid_config_raises(policy: str, weights: tuple[int, ...], error: type) -> None:
    with pytest.raises(error):
        make_balancer(policy, eps(*weights))


# --- round_robin --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param((1, 1, 1), id="equal"),
        pytest.param((5, 3, 1), id="5-3-1"),
        pytest.param((100, 50, 25), id="gcd-reduced"),
        pytest.param((8191, 8192), id="live-beyond-schedule-limit"),
    ],
)
def test_round_robin_exact_proportions(weights: tuple[int, ...]) -> None:
    cycles = 3
    counts = picks("round_robin", eps(*weights), cycles * sum(weights))
    assert [counts[f"10.0.0.{i}:80"] for i in range(len(weights))] == [cycles * w for w in weights]


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param((1, 1, 1, 1), id="equal"),
        pytest.param((5, 5), id="halves"),
        pytest.param((4, 2, 1), id="4-2-1"),
        pytest.param((10, 1, 1), id="10-1-1"),
        pytest.param((7, 3, 0, 5), id="7-3-0-5"),
    ],
)
def test_round_robin_is_smooth(weights: tuple[int, ...]) -> None:
    # Smooth WRR keeps every endpoint within one pick of its ideal share at all times, so any
    # window of picks holds each endpoint within two of its share: no bursts.
    endpoints = eps(*weights)
    balancer = make_balancer("round_robin", endpoints, rng=random.Random(1))
    total = sum(weights)
    seq = [balancer.pick(None) for _ in range(3 * total)]
    for length in range(1, total + 1):
        for start in range(len(seq) - length):
            window = Counter(map(id, seq[start : start + length]))
            for e in endpoints:
                assert abs(window[id(e)] - length * e.weight / total) < 2


def test_round_robin_equal_weights_never_repeat() -> None:
    balancer = make_balancer("round_robin", eps(1, 1, 1), rng=random.Random(2))
    seq = [balancer.pick(None) for _ in range(30)]
    assert all(a is not b for a, b in itertools.pairwise(seq))


# --- least_request ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param([(1, 3), (1, 1), (1, 2)], "b", id="fewest-active"),
        pytest.param([(1, 0), (1, 5)], "a", id="idle-wins"),
        pytest.param([(4, 4), (1, 2)], "a", id="per-weight"),
        pytest.param([(2, 3), (1, 1)], "b", id="per-weight-lighter"),
    ],
)
def test_least_request_prefers_less_loaded(state: list[tuple[int, int]], expected: str) -> None:
    endpoints = [Ep(name, w, a) for name, (w, a) in zip("abc", state, strict=False)]
    balancer = make_balancer("least_request", endpoints, rng=random.Random(3))
    assert {balancer.pick(None).label for _ in range(20)} == {expected}  # type: ignore[union-attr]


def test_least_request_ties_rotate() -> None:
    endpoints = [Ep("a", 1, 2), Ep("b", 2, 4), Ep("c", 1, 2), Ep("busy", 1, 9)]
    counts = picks("least_request", endpoints, 300)
    assert counts == {"a": 100, "b": 100, "c": 100}


def test_least_request_follows_active_changes() -> None:
    a, b = Ep("a"), Ep("b")
    balancer = make_balancer("least_request", [a, b])
    for _ in range(10):
        chosen = balancer.pick(None)
        assert chosen is not None
        chosen.active += 1
    assert (a.active, b.active) == (5, 5)


# --- random (power of two choices) --------------------------------------------------------------


def test_p2c_never_picks_the_busiest() -> None:
    endpoints = eps(1, 1, 1, 1, 1)
    endpoints[2].active = 50
    counts = picks("random", endpoints, 5_000)
    assert "10.0.0.2:80" not in counts
    assert len(counts) == 4


def test_p2c_favours_less_active() -> None:
    endpoints = [Ep(f"e{i}", 1, i) for i in range(10)]  # e0 idle ... e9 busiest
    counts = picks("random", endpoints, 20_000)
    # P(pick e_i) = P(e_i sampled and the other sample is busier) = 2 * (9 - i) / 90.
    for i in range(10):
        assert counts[f"e{i}"] / 20_000 == pytest.approx(2 * (9 - i) / 90, abs=0.015)


def test_p2c_samples_by_weight_and_distinct() -> None:
    counts = picks("random", eps(1, 2, 7), 30_000)  # all idle: the first sample wins
    shares = [counts[f"10.0.0.{i}:80"] / 30_000 for i in range(3)]
    assert shares == pytest.approx([0.1, 0.2, 0.7], abs=0.015)
    heavy, light = Ep("heavy", 99, 5), Ep("light", 1, 0)
    # Two distinct samples always include "light", which is idle, so it always wins.
    assert picks("random", [heavy, light], 1_000) == {"light": 1_000}


# --- ring_hash ----------------------------------------------------------------------------------


def owners(endpoints: list[Ep], keys: list[str]) -> dict[str, str]:
    balancer = make_balancer("ring_hash", endpoints)
    return {k: balancer.pick(k).label for k in keys}  # type: ignore[union-attr]


KEYS = [f"user-{i}" for i in range(20_000)]


def test_ring_hash_same_key_same_endpoint() -> None:
    assert owners(eps(1, 1, 1, 1), KEYS) == owners(eps(1, 1, 1, 1), KEYS)


def test_ring_hash_is_stable_across_processes() -> None:
    script = (
        "from propylon.runtime.balancer import make_balancer;"
        "from propylon.ir.model import EndpointIR;"
        "b = make_balancer('ring_hash', [EndpointIR(f'10.0.0.{i}', 80) for i in range(5)]);"
        "print(','.join(b.pick(f'k{i}').address for i in range(200)))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=ROOT,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1


@pytest.mark.parametrize(
    "weights",
    [pytest.param((1, 1, 1, 1), id="equal"), pytest.param((3, 1), id="weighted-3-1")],
)
def test_ring_hash_spreads_by_weight(weights: tuple[int, ...]) -> None:
    counts = Counter(owners(eps(*weights), KEYS).values())
    total = sum(weights)
    for i, w in enumerate(weights):
        assert counts[f"10.0.0.{i}:80"] / len(KEYS) == pytest.approx(w / total, rel=0.25)


def test_ring_hash_removal_remaps_only_the_removed_endpoints_keys() -> None:
    endpoints = eps(*[1] * 10)
    before = owners(endpoints, KEYS)
    removed = endpoints.pop(4).label
    after = owners(endpoints, KEYS)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == removed for k in moved)
    assert len(moved) / len(KEYS) == pytest.approx(1 / 10, abs=0.04)


def test_ring_hash_identity_is_address_port_or_key() -> None:
    by_address = make_balancer("ring_hash", [Addressed("10.0.0.1", 80), Addressed("b", 81)])
    assert by_address.pick("k") is by_address.pick("k")
    with pytest.raises(TypeError):
        make_balancer("ring_hash", [Anonymous(), Anonymous()])


def test_ring_hash_without_key_picks_randomly_by_weight() -> None:
    counts = picks("ring_hash", eps(3, 1), 20_000)
    assert counts["10.0.0.0:80"] / 20_000 == pytest.approx(0.75, abs=0.02)


# --- WeightedChoice -----------------------------------------------------------------------------


def test_weighted_choice_90_10_exact_over_any_100() -> None:
    choice = WeightedChoice(["stable", "canary"], [90, 10])
    seq = [choice.pick() for _ in range(1_000)]
    for start in range(0, 900):
        assert Counter(seq[start : start + 100])["canary"] == 10
    assert ("canary", "canary") not in itertools.pairwise(seq)  # spread out, never bunched


@pytest.mark.parametrize(
    ("items", "weights", "expected"),
    [
        pytest.param(["a", "b", "c"], [50, 30, 20], {"a": 50, "b": 30, "c": 20}, id="three-way"),
        pytest.param(["a", "b"], [0, 5], {"b": 100}, id="weight-zero-never"),
        pytest.param(["a"], [1], {"a": 100}, id="single"),
        pytest.param(["a", "b"], [0, 0], {None: 100}, id="all-zero-none"),
        pytest.param([], [], {None: 100}, id="empty-none"),
    ],
)
def test_weighted_choice_split(
    items: list[str], weights: list[int], expected: dict[str | None, int]
) -> None:
    choice = WeightedChoice(items, weights)
    assert Counter(choice.pick() for _ in range(100)) == expected


def test_weighted_choice_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        WeightedChoice(["a"], [1, 2])
    with pytest.raises(ValueError):
        WeightedChoice(["a", "b"], [1, -1])
