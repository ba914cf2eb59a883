"""Local rateLimit buckets lend tokens to a worker in advance (filters/_buckets.py): the
limit is never exceeded across workers, small buckets stay exact, a lease expires, and a
bucket's identity is the same whether computed or remembered."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from propylon.filters import _buckets
from propylon.filters._buckets import LEASE_MAX, LEASE_SHARE, SLOT, SharedBuckets
from propylon.filters.rate_limit import KNOWN_BUCKETS, Limit
from propylon.policies.traffic import RateLimit

NO_REFILL = 1e-9  # tokens per second: nothing comes back during a test


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[SharedBuckets, SharedBuckets]]:
    """Two workers' views of one proxy's table (the same file, mapped twice)."""
    path = str(tmp_path / "propylon-rl-test")
    first, second = SharedBuckets(path), SharedBuckets(path)
    yield first, second
    for table in (first, second):
        table.map.close()


def shared_tokens(table: SharedBuckets, fingerprint: int) -> float:
    start = (fingerprint % _buckets.SLOTS) * SLOT.size
    for i in range(_buckets.PROBE):
        fp, tokens, _, _ = SLOT.unpack_from(table.map, start + i * SLOT.size)
        if fp == fingerprint:
            return float(tokens)
    raise AssertionError("no slot for the fingerprint")


def test_a_small_bucket_lends_nothing_and_stays_exact(
        workers: tuple[SharedBuckets, SharedBuckets]) -> None:
    capacity = float(LEASE_SHARE * 2 - 1)  # 31 tokens: at most one lent at a time
    allowed = [workers[i % 2].take(7, capacity, NO_REFILL)[0] for i in range(60)]
    assert allowed.count(True) == 31
    assert allowed[:31] == [True] * 31  # refused only once the bucket is empty
    assert not workers[0].leases and not workers[1].leases


def test_a_lease_is_spent_without_touching_the_table(
        workers: tuple[SharedBuckets, SharedBuckets]) -> None:
    first, second = workers
    allowed, left, _ = first.take(9, 1000.0, NO_REFILL)
    lent = min(LEASE_MAX, 1000 // LEASE_SHARE)
    assert allowed and left == pytest.approx(999)
    assert shared_tokens(first, 9) == pytest.approx(1000 - lent)
    for _ in range(lent - 1):
        assert first.take(9, 1000.0, NO_REFILL)[0]
    assert shared_tokens(first, 9) == pytest.approx(1000 - lent)  # no lock, no write
    assert second.take(9, 1000.0, NO_REFILL)[1] == pytest.approx(999 - lent)
    assert first.take(9, 1000.0, NO_REFILL)[0]  # the lease is spent: a new one is taken
    assert shared_tokens(first, 9) < 1000 - 2 * lent + 1


def test_interleaved_workers_never_exceed_the_limit(
        workers: tuple[SharedBuckets, SharedBuckets]) -> None:
    rng = random.Random(5)
    capacity = 500.0
    allowed = sum(workers[rng.randrange(2)].take(11, capacity, NO_REFILL)[0]
                  for _ in range(2000))
    # never more than the bucket; at most the tokens one lease still holds less
    assert capacity - LEASE_MAX <= allowed <= capacity, allowed


def test_an_unspent_lease_expires(workers: tuple[SharedBuckets, SharedBuckets],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = workers
    monkeypatch.setattr(_buckets, "LEASE_SECONDS", 0.05)
    first.take(13, 1000.0, NO_REFILL)
    before = shared_tokens(first, 13)
    time.sleep(0.06)
    assert first.take(13, 1000.0, NO_REFILL)[0]
    assert shared_tokens(first, 13) < before  # went to the table again


def test_refusals_report_the_wait_for_a_token(
        workers: tuple[SharedBuckets, SharedBuckets]) -> None:
    first, _ = workers
    assert first.take(15, 1.0, 0.5)[0]
    allowed, left, wait = first.take(15, 1.0, 0.5)
    assert not allowed and left < 1 and 0 < wait <= 2.0


def test_a_bucket_identity_is_the_hash_of_its_descriptors() -> None:
    limit = Limit("Route a/b rule 0", 0, RateLimit(requests=10, per="1s",
                                                  key=["client_ip", "header:x-tenant"]))
    ctx = SimpleNamespace(client_ip="10.1.2.3", request_headers=[(b"x-tenant", b"blue")],
                          path=b"/", state=None)
    digest, fingerprint = limit.bucket(ctx)  # type: ignore[arg-type]
    expected = hashlib.blake2b(b"\0".join((limit.seed, b"10.1.2.3", b"blue")),
                               digest_size=16).digest()
    assert digest == expected and fingerprint == int.from_bytes(expected[:8], "little")
    assert limit.bucket(ctx) == (digest, fingerprint)  # type: ignore[arg-type]  # remembered
    for i in range(KNOWN_BUCKETS + 1):
        limit.bucket(SimpleNamespace(client_ip=f"10.9.{i // 256}.{i % 256}",  # type: ignore[arg-type]
                                     request_headers=[], path=b"/", state=None))
    assert len(limit.known) <= KNOWN_BUCKETS
