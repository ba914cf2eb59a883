"""``Router.changed``: a router less some entries and with new ones serves every request as
a router built from scratch from the entries left does, and shares what the change did not
touch (``runtime/router.py``)."""

from __future__ import annotations

import random

import pytest

from propylon.ir.model import MatchIR, PathMatchIR, ValueMatchIR
from propylon.runtime.router import Router, RouterEntry
from tests.support.request_view import Req

HOSTS = [(), ("a.example.com",), ("*.example.com",), ("b.example.com", "*"),
         ("*.b.example.com",), ("A.Example.com",)]
PATHS = [("prefix", "/"), ("prefix", "/api"), ("prefix", "/api/v1/"), ("exact", "/api"),
         ("exact", "/x"), ("regex", "/api/[0-9]+"), ("regex", "/.*"), ("prefix", "/x/y/z")]
CONDITIONS = [(None, ()), ("POST", ()), (None, (ValueMatchIR("x-beta", "1", None),)),
              ("GET", (ValueMatchIR("x-beta", None, None),))]
PROBE_HOSTS = ["a.example.com", "b.example.com", "c.b.example.com", "c.example.com",
               "other.org"]
PROBE_PATHS = ["/", "/api", "/api/", "/api/12", "/api/v1/x", "/x", "/x/y/z/w", "/zz"]



def random_entry(rng: random.Random, name: str, order: int) -> RouterEntry[str]:
    kind, path = rng.choice(PATHS)
    method, headers = rng.choice(CONDITIONS)
    match = MatchIR(PathMatchIR(kind, path), method, headers)
    return RouterEntry(rng.choice(HOSTS), match, name, order)


def answers(router: Router[str]) -> list[str | None]:
    return [router.match(host, method, path, Req(headers))
            for host in PROBE_HOSTS for path in PROBE_PATHS for method in ("GET", "POST")
            for headers in ({}, {"x-beta": "1"})]


@pytest.mark.parametrize("seed", range(12))
def test_a_changed_router_serves_as_one_built_from_its_entries(seed: int) -> None:
    rng = random.Random(seed)
    entries = [random_entry(rng, f"e{i}", i * 1000) for i in range(rng.randint(0, 30))]
    router = Router(entries)
    for step in range(8):
        gone = rng.sample(entries, rng.randint(0, min(4, len(entries))))
        left = [e for e in entries if e not in gone]
        # new entries anywhere in config order, between the orders of their neighbours
        new = [random_entry(rng, f"n{step}-{k}", rng.randrange(-1000, 40_000) * 1000 + 1 + k)
               for k in range(rng.randint(0, 4))]
        entries = sorted(left + new, key=lambda e: e.order)
        router = router.changed(gone, new)
        assert answers(router) == answers(Router(entries)), (seed, step)


def test_what_a_change_does_not_touch_is_shared() -> None:
    def entry(host: tuple[str, ...], path: str, name: str, order: int) -> RouterEntry[str]:
        return RouterEntry(host, MatchIR(PathMatchIR("prefix", path)), name, order)

    kept = [entry((), "/a", "a", 0), entry(("h.example.com",), "/b", "b", 10),
            entry(("*.example.com",), "/c", "c", 20)]
    router = Router(kept)
    added = entry((), "/d", "d", 5)
    changed = router.changed([], [added])
    default, new_default = router._default[0], changed._default[0]
    assert new_default is not default and new_default.prefixes["/a"] is default.prefixes["/a"]
    assert changed._wildcards[".example.com"] is router._wildcards[".example.com"]
    assert changed._exact["h.example.com"][0] is router._exact["h.example.com"][0]
    assert changed.match("x", "GET", "/d/1", Req({})) == "d"
    assert router.match("x", "GET", "/d/1", Req({})) is None  # the old router is as it was
    # the last entry of a table gone: the table is gone, the chains know it
    without = changed.changed([kept[2]], [])
    assert ".example.com" not in without._wildcards
    assert without.match("z.example.com", "GET", "/c", Req({})) is None
    assert without.match("h.example.com", "GET", "/c", Req({})) is None
    assert without.match("h.example.com", "GET", "/b", Req({})) == "b"


def test_a_new_entry_with_a_bad_path_kind_or_regex_raises() -> None:
    router = Router([RouterEntry((), MatchIR(PathMatchIR("prefix", "/")), "a", 0)])
    with pytest.raises(ValueError, match="unknown path match kind"):
        router.changed([], [RouterEntry((), MatchIR(PathMatchIR("glob", "/*")), "b", 1)])
    with pytest.raises(Exception, match=r"unterminated|missing"):
        router.changed([], [RouterEntry((), MatchIR(PathMatchIR("regex", "(")), "b", 1)])
