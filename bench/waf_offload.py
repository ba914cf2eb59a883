"""Where the WAF engine runs: the measurements behind docs/design.md "WAF engine calls".

Prints, for the full CRS at paranoia 1 (Debian's libmodsecurity3 + modsecurity-crs):
1. the engine's own time per request, inline: a benign GET and a 10 KiB JSON POST;
2. the cost of handing a job to a thread pool and to a process pool and getting the answer
   back (a no-op job carrying the 10 KiB body), from an asyncio loop;
3. the event loop's responsiveness while JSON inspections run on the thread pool: how late a
   1 ms timer fires (ctypes releases the GIL for the C call, so the loop keeps running).

A few hundred milliseconds in all: ``python bench/waf_offload.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from propylon.policies.waf import WafPolicy
from propylon.waf.exchange import POOL_THREADS, RequestView, WafExchange
from propylon.waf.rules import WafRules, compile_rules, rule_parts

HEADERS = [(b"host", b"api.test"), (b"user-agent", b"bench/1.0"), (b"accept", b"*/*")]
RECORDS = [{"id": i, "name": f"user {i}", "email": f"user{i}@example.com", "active": True,
            "score": i * 1.5, "tags": ["a", "b"]} for i in range(90)]
JSON_BODY = json.dumps({"items": RECORDS}).encode()[:10240]
JSON_BODY = json.dumps({"items": RECORDS[:len(RECORDS) * 10240 // len(JSON_BODY)]}).encode()


def requests() -> dict[str, tuple[RequestView, bytes]]:
    json_headers = [*HEADERS, (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(JSON_BODY))]
    return {
        "GET": (RequestView(b"GET", b"/api/items?page=2", b"1.1", HEADERS, "127.0.0.1", "", 0),
                b""),
        f"POST {len(JSON_BODY)} B JSON": (
            RequestView(b"POST", b"/api/items", b"1.1", json_headers, "127.0.0.1", "", 0),
            JSON_BODY),
    }


def inspect(rules: WafRules, view: RequestView, body: bytes) -> None:
    exchange = WafExchange()
    exchange.inspect_request(rules, view, body)
    exchange.close()


def engine_times(rules: WafRules, rounds: int) -> None:
    for name, (view, body) in requests().items():
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            inspect(rules, view, body)
            samples.append(time.perf_counter() - start)
        print(f"engine inline, {name}: median {statistics.median(samples) * 1e6:.0f} us")


def _echo(data: bytes) -> int:
    return len(data)


async def handoff(pool: Executor, rounds: int) -> float:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(pool, _echo, JSON_BODY)  # warm up (process start)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await loop.run_in_executor(pool, _echo, JSON_BODY)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def loop_lag(rules: WafRules, pool: ThreadPoolExecutor, jobs: int) -> tuple[float, float]:
    view, body = list(requests().values())[1]
    loop = asyncio.get_running_loop()
    late: list[float] = []
    busy = asyncio.gather(*(loop.run_in_executor(pool, inspect, rules, view, body)
                            for _ in range(jobs)))
    while not busy.done():
        start = time.perf_counter()
        await asyncio.sleep(0.001)
        late.append(time.perf_counter() - start - 0.001)
    await busy
    return statistics.median(late), max(late)


async def main(rounds: int) -> None:
    rules = compile_rules(rule_parts(WafPolicy()))
    engine_times(rules, rounds)
    with ThreadPoolExecutor(POOL_THREADS) as threads, ProcessPoolExecutor(1) as processes:
        print(f"hand-off, thread pool: median {await handoff(threads, rounds) * 1e6:.0f} us")
        print(f"hand-off, process pool (10 KiB argument): "
              f"median {await handoff(processes, rounds) * 1e6:.0f} us")
        median, worst = await loop_lag(rules, threads, 2 * POOL_THREADS)
        print(f"1 ms timer lateness while {2 * POOL_THREADS} JSON inspections run on "
              f"{POOL_THREADS} threads: median {median * 1e6:.0f} us, max {worst * 1e6:.0f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
