"""Micro-benchmark of ``Router.match``: ns per match for 10, 1,000 and 100,000 routes.

Not a test. Run ``python bench/micro_router.py``; the figures should not grow with the route
count (only regex routes are scanned linearly, and this table has none).

Each generated service ``i`` (written ``svc000042``) contributes ten routes: an exact
``/svc{i}/health``, prefixes ``/svc{i}/api`` and ``/svc{i}/api/v2``, a ``/svc{i}/api`` prefix
with a method condition, a header-conditioned ``/svc{i}/admin`` with an unconditioned fallback,
four routes on the host ``svc{i}.example.com`` and one on ``*.svc{i}.example.org``.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from propylon.ir.model import MatchIR, PathMatchIR, ValueMatchIR
from propylon.runtime.router import Router, RouterEntry

SIZES = (10, 1_000, 100_000)
ROUTES_PER_SERVICE = 10
ROUNDS = 9
NUMBER = 100_000


class Request:
    __slots__ = ("headers",)

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def query_param(self, name: str) -> str | None:
        return None


def service_routes(i: int) -> list[tuple[tuple[str, ...], MatchIR]]:
    admin = (ValueMatchIR("x-role", "admin"),)
    host = (f"svc{i:06d}.example.com",)
    return [
        ((), MatchIR(PathMatchIR("exact", f"/svc{i:06d}/health"))),
        ((), MatchIR(PathMatchIR("prefix", f"/svc{i:06d}/api"))),
        ((), MatchIR(PathMatchIR("prefix", f"/svc{i:06d}/api/v2"))),
        ((), MatchIR(PathMatchIR("prefix", f"/svc{i:06d}/api"), method="POST")),
        ((), MatchIR(PathMatchIR("prefix", f"/svc{i:06d}/admin"), headers=admin)),
        ((), MatchIR(PathMatchIR("prefix", f"/svc{i:06d}/admin"))),
        (host, MatchIR(PathMatchIR("prefix", "/"))),
        (host, MatchIR(PathMatchIR("prefix", "/static"))),
        (host, MatchIR(PathMatchIR("exact", "/"))),
        ((f"*.svc{i:06d}.example.org",), MatchIR(PathMatchIR("prefix", "/"))),
    ]


def build(n_routes: int) -> Router[int]:
    entries = []
    for i in range(n_routes // ROUTES_PER_SERVICE):
        for hosts, match in service_routes(i):
            entries.append(RouterEntry(hosts, match, len(entries), len(entries)))
    return Router(entries)


def scenarios(i: int) -> dict[str, tuple[str, str, str, Request]]:
    plain, admin = Request({}), Request({"x-role": "admin"})
    return {
        "exact path": ("a.example.net", "GET", f"/svc{i:06d}/health", plain),
        "prefix, depth 5": ("a.example.net", "GET", f"/svc{i:06d}/api/v2/users/42", plain),
        "prefix, method cond.": ("a.example.net", "POST", f"/svc{i:06d}/api/users", plain),
        "prefix, cond. failed": ("a.example.net", "GET", f"/svc{i:06d}/api/users", plain),
        "header cond. hit": ("a.example.net", "GET", f"/svc{i:06d}/admin/users", admin),
        "header cond. miss": ("a.example.net", "GET", f"/svc{i:06d}/admin/users", plain),
        "exact host": (f"svc{i:06d}.example.com", "GET", "/static/app.js", plain),
        "wildcard host": (f"x.svc{i:06d}.example.org", "GET", "/a/b", plain),
        "no match (404)": ("a.example.net", "GET", "/nothing/here/at/all", plain),
    }


def timer(router: Router[int], args: tuple[str, str, str, Request]) -> timeit.Timer:
    match = router.match
    host, method, path, request = args
    assert match(host, method, path, request) is not None or path.startswith("/nothing")
    return timeit.Timer(lambda: match(host, method, path, request))


def main() -> None:
    # Service names are zero-padded so every size has the same path lengths and depths. Rounds
    # interleave the sizes and the best round counts, which keeps machine noise out of the
    # comparison between sizes.
    routers = {n: build(n) for n in SIZES}
    names = list(scenarios(0))
    timers = {
        (name, n): timer(router, scenarios((n // ROUTES_PER_SERVICE) // 2)[name])
        for n, router in routers.items()
        for name in names
    }
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(ROUNDS):
        for key, t in timers.items():
            best[key] = min(best[key], t.timeit(NUMBER) / NUMBER * 1e9)
    print(f"Python {sys.version.split()[0]}; ns per Router.match, best of {ROUNDS} x {NUMBER:,}")
    print(f"{'scenario':<22}" + "".join(f"{n:>12,} routes" for n in SIZES))
    for name in names:
        print(f"{name:<22}" + "".join(f"{best[name, n]:>19.0f}" for n in SIZES))


if __name__ == "__main__":
    main()
