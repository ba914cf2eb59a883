"""The access log on stdout whose reader stops reading (a stalled log shipper, a paused
terminal): requests go on being answered, the lines stdout cannot take are dropped whole and
counted, and the log flows again once the reader reads. Real gateway processes whose stdout
is a pipe, then a socket (journald's kind), that the test leaves unread."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import IO

import pytest

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import REPO, Gateway, metric_value
from tests.support.net import poll_until

# a line is about 300 bytes: 1,000 of them are several times what a pipe (64 KiB) or a
# socket's buffers hold
REQUESTS = 1_000


class StdoutGateway(Gateway):
    """A gateway whose access log goes to stdout, which is ``stdout`` (a descriptor)."""

    def __init__(self, root: Path, stdout: int) -> None:
        config = lambda port: r.dump(  # noqa: E731
            r.gateway(port),
            r.route("main", rules=[r.rule({"prefix": "/x"},
                                          directResponse={"status": 200, "body": "x"})]))
        super().__init__(root, config, access_log=False,
                         extra_args=("--access-log", "stdout"))
        self.stdout = stdout

    def launch(self) -> Gateway:
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                self.command(), cwd=REPO, stdin=subprocess.DEVNULL, stdout=self.stdout,
                stderr=stderr)
        return self

    def dropped(self) -> float:
        return metric_value(self.metrics(), "propylon_access_log_lines_dropped_total")


def _all_answered(gw: Gateway, count: int, tag: str) -> None:
    for index in range(count):
        response = roundtrip(gw.port, "GET", f"/x/{tag}-{index}", timeout=5)
        assert response.status == 200, f"request {index}: {response.status}"


def _lines(reader: IO[bytes]) -> list[dict[str, object]]:
    """Every line readable now, each checked to be one whole JSON object."""
    data = b""
    while chunk := reader.read(1 << 16):
        data += chunk
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture(params=["pipe", "socket"])
def stalled(request: pytest.FixtureRequest, tmp_path: Path):
    """(gateway, the unread end of its stdout, opened non-blocking)."""
    ours: socket.socket | None = None
    if request.param == "pipe":
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        reader: IO[bytes] = os.fdopen(read_end, "rb", buffering=0)
    else:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        reader = ours.makefile("rb", buffering=0)
        write_end = theirs.detach()
    gw = StdoutGateway(tmp_path, write_end)
    try:
        try:
            gw.start()
        finally:
            os.close(write_end)  # the gateway holds it now
        yield gw, reader
    finally:
        gw.stop()
        reader.close()
        if ours is not None:
            ours.close()


def test_a_reader_that_stops_reading_holds_up_no_request(stalled) -> None:
    gw, reader = stalled
    _all_answered(gw, REQUESTS, "stalled")
    poll_until(lambda: gw.dropped() > 0, 5, message="dropped lines counted")
    written = _lines(reader)  # what stdout took before it was full: whole lines only
    assert written
    # the reader reads again: the log flows (the last batches held while it was full
    # first), and every line was either written or counted as dropped
    for index in range(20):
        _all_answered(gw, 1, f"again-{index}")
        written += poll_until(lambda: _lines_or_none(reader), 5, message="a line after reading")
    paths = [str(line["path"]) for line in written]
    assert [p for p in paths if p.startswith("/x/again-")] == [
        f"/x/again-{i}-0" for i in range(20)]
    stalled_paths = [p for p in paths if p.startswith("/x/stalled-")]
    assert len(stalled_paths) == len(set(stalled_paths))
    assert len(stalled_paths) + gw.dropped() == REQUESTS


def _lines_or_none(reader: IO[bytes]) -> list[dict[str, object]] | None:
    try:
        return _lines(reader) or None
    except AssertionError:
        return None
