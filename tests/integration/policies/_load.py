"""A closed-loop HTTP/1.1 load generator (keep-alive, asyncio) that records every answer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

REQUEST = b"GET %s HTTP/1.1\r\nhost: load\r\n\r\n"


@dataclass
class _Window:
    """``seconds`` of load from the first answer (``first``), the limiter's first check: until
    it comes, from the load's start."""

    seconds: float
    first: float | None = None
    until: float = 0.0


async def _client(port: int, path: bytes, window: _Window, out: list[tuple[float, int]]
                  ) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = REQUEST % path
    try:
        while time.monotonic() < window.until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            now = time.monotonic()
            if window.first is None:
                window.first, window.until = now, now + window.seconds
            out.append((now, status))
    finally:
        writer.close()


async def _run(ports: list[int], path: bytes, connections: int, seconds: float
               ) -> tuple[float, list[tuple[float, int]]]:
    window = _Window(seconds, until=time.monotonic() + seconds)
    out: list[tuple[float, int]] = []
    await asyncio.gather(*(_client(p, path, window, out)
                           for p in ports for _ in range(connections)))
    assert window.first is not None, "no answer"
    return window.first, out


def load(ports: list[int], path: str, connections: int, seconds: float
         ) -> tuple[float, list[tuple[float, int]]]:
    """(the first answer's time, [(answer time, status)]) of ``connections`` per port for
    ``seconds`` from the first answer."""
    return asyncio.run(_run(ports, path.encode(), connections, seconds))


def check_shared_limit(ports: list[int], path: str, seconds: float, what: str) -> None:
    """Load ``path`` on all ``ports`` (6 connections each) for ``seconds``; what they allowed
    together must hold one limit of 100 per second: the steady seconds (the first also spends
    the initial burst) 95-105 on average and 90-110 each. Prints the figures.

    The seconds are counted from the first answer, when the limit's bucket (full, created by
    its first check) starts: counted from the load's start, a start-up slower than a second
    (four proxies' first requests beside other tests) put the whole burst in the second
    second ([0, 196, 99, 101, 101, 98] and [66, 145, 98, 100, 101, 100])."""
    first, answers = load(ports, path, connections=6, seconds=seconds)
    offered = len(answers) / seconds
    per_second = [0] * int(seconds)
    for when, status in answers:
        assert status in (200, 429), status
        second = int(when - first)
        if status == 200 and second < len(per_second):
            per_second[second] += 1
    steady = per_second[1:]
    rate = sum(steady) / len(steady)
    print(f"\nglobal limit 100/s, {what}: offered {offered:.0f} req/s, "
          f"allowed per second {per_second}, steady mean {rate:.1f}/s")
    assert offered >= 300, f"load too low to test the limit: {offered:.0f} req/s"
    assert 95 <= rate <= 105, per_second
    assert all(90 <= n <= 110 for n in steady), per_second
