"""Load balancing: choose an endpoint of an upstream, or a backend of a route.

Invariants:
- Everything is compiled at construction. Weights are read once; a weight change means a new
  balancer (installed by snapshot swap). ``active`` is read at pick time and maintained by the
  caller (incremented when a request is sent, decremented when it ends).
- Endpoints with weight 0 are dropped at construction and never chosen. ``pick`` returns None
  only when no endpoint has a positive weight. One endpoint is returned with no computation.
- Balancers are not thread-safe: each belongs to one event loop, like the rest of the runtime.

Policies (``make_balancer``):
- ``round_robin``: smooth weighted round robin (nginx), precomputed as one cycle of the schedule
  after dividing the weights by their gcd, so a pick is one ``next()``; no endpoint gets a burst.
  The cycle starts at a random offset so that workers do not all begin on the same endpoint.
  A cycle longer than ``_MAX_SCHEDULE`` picks is computed live instead, O(endpoints) per pick.
- ``least_request``: the fewest ``active / weight``; the scan starts just after the previous
  winner and keeps the first minimum, so tied endpoints take turns.
- ``random``: power of two choices. Two distinct endpoints are sampled by weight (the second
  from the remaining weight, no retry loop) and the one with fewer ``active`` wins.
- ``ring_hash``: consistent hashing over a sorted ring of virtual nodes, 160 per endpoint per
  unit of the smallest weight (as nginx), capped at ``_MAX_RING`` in total, looked up with
  ``bisect``. Both hashes are stable across processes, unlike ``hash()``, and land in the same
  32-bit space: keys use ``zlib.crc32`` (as nginx's ``hash ... consistent``; ~60 ns a pick),
  nodes a 4-byte ``blake2b`` at construction, because crc32 of near-identical node names
  clusters. A node's identity is the endpoint's ``key`` or ``label`` attribute or its
  ``address:port``, never its position, so removing one endpoint moves only its own keys.
  ``hash_key=None`` falls back to a weighted random pick. ``hash_on`` says how the caller
  derives the key from a request; the balancer only keeps it (``RingHash.hash_on``).

Failover (``PriorityBalancer``): the balancers of several priority groups, each given a
per-mille load (``runtime/priority.py``). It is made only while more than one group takes
traffic; an Upstream served by one group picks from that group's balancer directly. Without a
hash key a group is chosen in smooth weighted order (exact shares over each cycle); with one,
by the key's ``crc32`` over the loads, so a key stays in its group while the loads hold.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

from propylon.ir.model import HashOnIR

_MAX_SCHEDULE = 8192  # picks in one precomputed cycle (64 KiB of references at most)
_RING_NODES_PER_WEIGHT = 160  # virtual nodes per endpoint of the smallest weight
_MAX_RING = 1 << 17  # virtual nodes in one ring

POLICIES: tuple[str, ...] = ("round_robin", "least_request", "random", "ring_hash")


class Endpoint(Protocol):
    @property
    def weight(self) -> int: ...

    @property
    def active(self) -> int: ...


T = TypeVar("T")
E = TypeVar("E", bound=Endpoint)
E_co = TypeVar("E_co", bound=Endpoint, covariant=True)


class Balancer(Generic[E_co]):
    """What every balancer is: a base class, not a Protocol, so that compiled callers call
    ``pick`` through the vtable instead of looking it up by name (docs/performance.md)."""

    __slots__ = ()

    def pick(self, hash_key: str | None) -> E_co | None:
        """The endpoint for one request; None only if no endpoint has weight > 0."""
        raise NotImplementedError


# --- smooth weighted interleaving ---------------------------------------------------------------


def smooth_schedule(weights: Sequence[int]) -> list[int] | None:
    """One cycle of nginx's smooth weighted round robin, as indices; None if over the limit.

    Weights must be positive. They are divided by their gcd first, so the cycle is as short
    as the proportions allow (90/10 gives a cycle of 10).
    """
    g = math.gcd(*weights)
    reduced = [w // g for w in weights]
    total = sum(reduced)
    if total > _MAX_SCHEDULE:
        return None
    current = [0] * len(reduced)
    return [_swrr_step(current, reduced, total) for _ in range(total)]


def _swrr_step(current: list[int], weights: Sequence[int], total: int) -> int:
    best = 0
    for i, w in enumerate(weights):
        current[i] += w
        if current[i] > current[best]:
            best = i
    current[best] -= total
    return best


class _LiveSmooth(Generic[T]):
    """Smooth weighted round robin step by step, for cycles too long to precompute."""

    __slots__ = ("_current", "_items", "_total", "_weights")

    def __init__(self, items: Sequence[T], weights: Sequence[int]) -> None:
        self._items = tuple(items)
        self._weights = tuple(weights)
        self._total = sum(weights)
        self._current = [0] * len(weights)

    def __call__(self) -> T:
        return self._items[_swrr_step(self._current, self._weights, self._total)]


def _smooth_picker(items: Sequence[T], weights: Sequence[int], offset: int = 0) -> Callable[[], T]:
    """A zero-argument callable yielding ``items`` in smooth weighted order, forever."""
    schedule = smooth_schedule(weights)
    if schedule is None:
        return _LiveSmooth(items, weights)
    k = offset % len(schedule)
    return itertools.cycle([items[i] for i in schedule[k:] + schedule[:k]]).__next__


class WeightedChoice(Generic[T]):
    """Deterministic smooth split of traffic across route backends (canary weights).

    Over any 100 picks with weights 90/10 the split is exactly 90/10, and the minority item is
    spread out rather than bunched. Weight 0 is never picked; all weights 0 picks None.
    """

    __slots__ = ("pick",)

    pick: Callable[[], T | None]

    def __init__(self, items: Sequence[T], weights: Sequence[int]) -> None:
        if len(items) != len(weights):
            raise ValueError("items and weights differ in length")
        if any(w < 0 for w in weights):
            raise ValueError("weights must be >= 0")
        kept = [(item, w) for item, w in zip(items, weights, strict=True) if w > 0]
        if not kept:
            self.pick = _none
        elif len(kept) == 1:
            self.pick = itertools.repeat(kept[0][0]).__next__
        else:
            self.pick = _smooth_picker([i for i, _ in kept], [w for _, w in kept])


def _none() -> None:
    return None


# --- endpoint balancers -------------------------------------------------------------------------


class _Empty(Balancer[Any]):
    __slots__ = ()

    def pick(self, hash_key: str | None) -> None:
        return None


NO_ENDPOINTS: Final[Balancer[Any]] = _Empty()


class _Single(Balancer[E]):
    __slots__ = ("_endpoint",)

    def __init__(self, endpoint: E) -> None:
        self._endpoint = endpoint

    def pick(self, hash_key: str | None) -> E:
        return self._endpoint


class RoundRobin(Balancer[E]):
    __slots__ = ("_next",)

    def __init__(self, endpoints: Sequence[E], rng: random.Random) -> None:
        weights = [e.weight for e in endpoints]
        self._next = _smooth_picker(endpoints, weights, rng.randrange(sum(weights)))

    def pick(self, hash_key: str | None) -> E:
        return self._next()


class LeastRequest(Balancer[E]):
    __slots__ = ("_n", "_ring", "_start")

    def __init__(self, endpoints: Sequence[E], rng: random.Random) -> None:
        pairs = [(e, 1.0 / e.weight) for e in endpoints]
        self._ring = pairs + pairs  # a scan from any start reads n items without wrapping
        self._n = len(pairs)
        self._start = rng.randrange(self._n)

    def pick(self, hash_key: str | None) -> E:
        # The scan starts just after the previous winner and keeps the first minimum, so tied
        # endpoints take turns.
        ring, start = self._ring, self._start
        best_i = start
        endpoint, inv_weight = ring[start]
        best = endpoint.active * inv_weight
        if best:  # an idle endpoint cannot be beaten
            for i in range(start + 1, start + self._n):
                endpoint, inv_weight = ring[i]
                score = endpoint.active * inv_weight
                if score < best:
                    best_i, best = i, score
                    if not score:
                        break
        self._start = (best_i + 1) % self._n
        return ring[best_i][0]


class _WeightedSampler(Generic[E]):
    """Weighted sampling by bisecting cumulative weights; ``pair`` samples two distinct."""

    __slots__ = ("_cum", "_endpoints", "_hi", "_random", "_total")

    def __init__(self, endpoints: Sequence[E], rng: random.Random) -> None:
        self._endpoints = tuple(endpoints)
        self._cum = list(itertools.accumulate(e.weight for e in endpoints))
        self._total = self._cum[-1]
        self._hi = len(self._cum) - 1  # bisect's upper bound guards against r rounding to total
        self._random = rng.random

    def one(self) -> E:
        i = bisect.bisect_right(self._cum, self._random() * self._total, 0, self._hi)
        return self._endpoints[i]

    def pair(self) -> tuple[E, E]:
        cum, hi = self._cum, self._hi
        i = bisect.bisect_right(cum, self._random() * self._total, 0, hi)
        first = self._endpoints[i]
        # Sample the rest of the weight, skipping over the first endpoint's interval.
        start = cum[i] - first.weight
        r = self._random() * (self._total - first.weight)
        if r >= start:
            r += first.weight
        return first, self._endpoints[bisect.bisect_right(cum, r, 0, hi)]


class PowerOfTwo(Balancer[E]):
    __slots__ = ("_pair",)

    def __init__(self, endpoints: Sequence[E], rng: random.Random) -> None:
        self._pair = _WeightedSampler(endpoints, rng).pair

    def pick(self, hash_key: str | None) -> E:
        a, b = self._pair()
        return b if b.active < a.active else a


class RingHash(Balancer[E]):
    __slots__ = ("_fallback", "_owners", "_points", "hash_on")

    def __init__(
        self, endpoints: Sequence[E], rng: random.Random, hash_on: HashOnIR | None = None
    ) -> None:
        ring = sorted(_ring_nodes(endpoints))
        self._points = [p for p, _, _ in ring]
        owners = [endpoints[i] for _, _, i in ring]
        self._owners = (*owners, owners[0])  # a key past the last point wraps to the first
        self._fallback = _WeightedSampler(endpoints, rng).one
        self.hash_on = hash_on

    def pick(self, hash_key: str | None) -> E:
        if hash_key is None:
            return self._fallback()
        h = zlib.crc32(hash_key.encode())
        return self._owners[bisect.bisect_left(self._points, h)]


def _ring_nodes(endpoints: Sequence[E]) -> list[tuple[int, str, int]]:
    """(point, node name, endpoint index); the name breaks ties between colliding points."""
    smallest = min(e.weight for e in endpoints)
    counts = [_RING_NODES_PER_WEIGHT * e.weight // smallest for e in endpoints]
    scale = min(1.0, _MAX_RING / sum(counts))
    nodes = []
    for i, e in enumerate(endpoints):
        key = _endpoint_key(e)
        for v in range(max(1, int(counts[i] * scale))):
            name = f"{key}-{v}"
            nodes.append((_node_point(name), name, i))
    return nodes


def _node_point(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest())


def _endpoint_key(e: Any) -> str:
    """A stable identity: the first str of ``key`` or ``label``, else ``address:port``."""
    for attr in ("key", "label"):
        key = getattr(e, attr, None)
        if isinstance(key, str):
            return key
    address, port = getattr(e, "address", None), getattr(e, "port", None)
    if address is None or port is None:
        raise TypeError("ring_hash endpoints need a str 'key' or 'label', or 'address' and 'port'")
    return f"{address}:{port}"


class PriorityBalancer(Balancer[E]):
    """Spill between priority groups: one group per pick, by load, then its own balancer."""

    __slots__ = ("_balancers", "_choose", "_cum", "_hi", "_total")

    def __init__(self, balancers: Sequence[Balancer[E]], loads: Sequence[int]) -> None:
        if len(balancers) != len(loads) or not loads or min(loads) <= 0:
            raise ValueError("one positive load per balancer")
        self._balancers = tuple(balancers)
        self._choose = _smooth_picker(self._balancers, loads)
        self._cum = list(itertools.accumulate(loads))
        self._total = self._cum[-1]
        self._hi = len(self._cum) - 1

    def pick(self, hash_key: str | None) -> E | None:
        if hash_key is None:
            return self._choose().pick(None)
        point = zlib.crc32(hash_key.encode()) % self._total
        return self._balancers[bisect.bisect_right(self._cum, point, 0, self._hi)].pick(hash_key)


# --- construction -------------------------------------------------------------------------------

_POLICY_CLASSES: dict[str, Callable[[Sequence[Any], random.Random], Balancer[Any]]] = {
    "round_robin": RoundRobin,
    "least_request": LeastRequest,
    "random": PowerOfTwo,
}


def make_balancer(
    policy: str,
    endpoints: Sequence[E],
    hash_on: HashOnIR | None = None,
    *,
    rng: random.Random | None = None,
) -> Balancer[E]:
    """Compile a balancer for ``policy`` (one of ``POLICIES``) over ``endpoints``.

    ``rng`` is for tests that need reproducible random and rotation choices.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown load-balancing policy {policy!r}")
    if any(e.weight < 0 for e in endpoints):
        raise ValueError("endpoint weights must be >= 0")
    live = [e for e in endpoints if e.weight > 0]
    if not live:
        return NO_ENDPOINTS
    if len(live) == 1:
        return _Single(live[0])
    rng = rng or random.Random()
    if policy == "ring_hash":
        return RingHash(live, rng, hash_on)
    return _POLICY_CLASSES[policy](live, rng)
