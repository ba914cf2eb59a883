"""A closed-loop HTTP/1.1 load generator (keep-alive, asyncio) that records every answer."""

from __future__ import annotations

import asyncio
import time

REQUEST = b"GET %s HTTP/1.1\r\nhost: load\r\n\r\n"


async def _client(port: int, path: bytes, until: float, out: list[tuple[float, int]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = REQUEST % path
    try:
        while time.monotonic() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            out.append((time.monotonic(), status))
    finally:
        writer.close()


async def _run(ports: list[int], path: bytes, connections: int, seconds: float
               ) -> tuple[float, list[tuple[float, int]]]:
    start = time.monotonic()
    out: list[tuple[float, int]] = []
    await asyncio.gather(*(_client(p, path, start + seconds, out)
                           for p in ports for _ in range(connections)))
    return start, out


def load(ports: list[int], path: str, connections: int, seconds: float
         ) -> tuple[float, list[tuple[float, int]]]:
    """(start time, [(answer time, status)]) of ``connections`` per port for ``seconds``."""
    return asyncio.run(_run(ports, path.encode(), connections, seconds))


def check_shared_limit(ports: list[int], path: str, seconds: float, what: str) -> None:
    """Load ``path`` on all ``ports`` (6 connections each) for ``seconds``; what they allowed
    together must hold one limit of 100 per second: the steady seconds (the first also spends
    the initial burst) 95-105 on average and 90-110 each. Prints the figures."""
    start, answers = load(ports, path, connections=6, seconds=seconds)
    offered = len(answers) / seconds
    per_second = [0] * int(seconds)
    for when, status in answers:
        assert status in (200, 429), status
        second = int(when - start)
        if status == 200 and second < len(per_second):
            per_second[second] += 1
    steady = per_second[1:]
    rate = sum(steady) / len(steady)
    print(f"\nglobal limit 100/s, {what}: offered {offered:.0f} req/s, "
          f"allowed per second {per_second}, steady mean {rate:.1f}/s")
    assert offered >= 300, f"load too low to test the limit: {offered:.0f} req/s"
    assert 95 <= rate <= 105, per_second
    assert all(90 <= n <= 110 for n in steady), per_second
