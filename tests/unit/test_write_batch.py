"""WriteBatch: writes of one turn of the loop go out together at its end, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from propylon.proxy.batch import WriteBatch


class Sink(asyncio.WriteTransport):
    def __init__(self, closing: bool = False) -> None:
        super().__init__()
        self.data: list[bytes] = []
        self.closing = closing

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.data.append(data)

    def is_closing(self) -> bool:
        return self.closing


class Held:
    def __init__(self, log: list[str], name: str, fail: bool = False) -> None:
        self.log, self.name, self.fail = log, name, fail

    def release_output(self) -> None:
        if self.fail:
            raise RuntimeError("boom")
        self.log.append(self.name)


def test_writes_wait_for_the_end_of_the_turn_and_keep_their_order() -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        batch = WriteBatch(asyncio.get_running_loop())
        sink = Sink()
        batch.write(sink, b"a")
        batch.write(sink, b"b")
        before = list(sink.data)
        await asyncio.sleep(0)
        return before, sink.data

    before, after = asyncio.run(main())
    assert before == []
    assert after == [b"a", b"b"]


class CountingLoop:
    """The loop as the batch sees it, counting the flushes it schedules (a subclass of the
    batch would not do: the compiled build's classes take no interpreted subclasses)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.flushes = 0

    def call_soon(self, callback: Callable[[], object]) -> asyncio.Handle:
        self.flushes += 1
        return self.loop.call_soon(callback)


def test_one_flush_per_turn_and_closed_transports_are_skipped() -> None:
    async def main() -> tuple[list[bytes], list[bytes], list[str]]:
        loop = CountingLoop(asyncio.get_running_loop())
        batch = WriteBatch(loop)  # type: ignore[arg-type]
        open_sink, closed_sink = Sink(), Sink(closing=True)
        released: list[str] = []
        for i in range(10):
            batch.write(open_sink, b"%d" % i)
            batch.write(closed_sink, b"x")
            batch.release_later(Held(released, f"c{i}"))
        await asyncio.sleep(0)
        assert loop.flushes == 1
        batch.write(open_sink, b"next turn")
        await asyncio.sleep(0)
        assert loop.flushes == 2
        return open_sink.data, closed_sink.data, released

    opened, closed, released = asyncio.run(main())
    assert opened == [b"%d" % i for i in range(10)] + [b"next turn"]
    assert closed == []  # an exchange that ended before the turn did
    assert released == [f"c{i}" for i in range(10)]


def test_a_failing_connection_does_not_cost_the_others_their_output(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> list[str]:
        batch = WriteBatch(asyncio.get_running_loop())
        released: list[str] = []
        batch.release_later(Held(released, "first"))
        batch.release_later(Held(released, "broken", fail=True))
        batch.release_later(Held(released, "last"))
        await asyncio.sleep(0)
        return released

    assert asyncio.run(main()) == ["first", "last"]
    assert "writing held output to a client failed" in caplog.text
