"""A ``ScriptedUpstream`` whose response bodies trickle: ``piece_size`` bytes every
``piece_gap`` seconds after the head, so a response can start in time and end late."""

from __future__ import annotations

import asyncio

from tests.support.upstream import ScriptedUpstream


class SlowBodyUpstream(ScriptedUpstream):
    def __init__(self, name: str = "slow-body", piece_size: int = 100,
                 piece_gap: float = 0.1) -> None:
        super().__init__(name)
        self.piece_size = piece_size
        self.piece_gap = piece_gap

    async def _write_body(self, writer: asyncio.StreamWriter, body: bytes, chunks: bool) -> None:
        self.sent_bytes = 0
        for start in range(0, len(body), self.piece_size):
            piece = body[start:start + self.piece_size]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunks else piece)
            await writer.drain()
            self.sent_bytes += len(piece)
            await asyncio.sleep(self.piece_gap)
