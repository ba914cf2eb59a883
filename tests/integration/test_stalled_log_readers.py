"""Logs whose reader stops reading (a stalled log shipper, a paused terminal): requests go on
being answered, what the reader cannot take is dropped whole and counted, and the log flows
again once it reads. Real gateway processes whose stdout (the access log) is a pipe, then a
socket (journald's kind), and whose stderr (a warning per request) is a pipe, left unread."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import IO

import pytest

from tests.support import resources as r
from tests.support.client import RawClient
from tests.support.gateway import REPO, Config, Gateway, metric_value
from tests.support.net import poll_until

# What a reader has no room for waits in a backlog of 4 MiB (``nonblocking.BACKLOG_BYTES``)
# before anything is dropped: 1,000 lines or records of 6 KB are half as much again.
REQUESTS = 1_000
PADDING = "a" * 6000


def _direct(port: int) -> str:
    return r.dump(r.gateway(port), r.route("main", rules=[
        r.rule({"prefix": "/x"}, directResponse={"status": 200, "body": "x"})]))


class StreamsGateway(Gateway):
    """A gateway whose stdout and stderr are the descriptors given (stderr None: the file
    the support class reads)."""

    def __init__(self, root: Path, config: Config, stdout: int, stderr: int | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(root, config, access_log=False, extra_args=extra_args)
        self.stdout, self.stderr = stdout, stderr

    def launch(self) -> Gateway:
        with open(self.stderr_path, "wb") as stderr_file:
            self.process = subprocess.Popen(
                self.command(), cwd=REPO, stdin=subprocess.DEVNULL, stdout=self.stdout,
                stderr=stderr_file if self.stderr is None else self.stderr)
        return self

    def dropped(self) -> float:
        return metric_value(self.metrics(), "propylon_access_log_lines_dropped_total")


def _all_answered(gw: Gateway, count: int, tag: str, status: int = 200) -> None:
    """``count`` requests one after another on one connection, each answered ``status``."""
    with RawClient(gw.port, timeout=5) as client:
        for index in range(count):
            client.request("GET", f"/x/{tag}-{index}-{PADDING}")
            response = client.read_final()
            assert response.status == status, f"request {index}: {response.status}"


class Lines:
    """The complete lines of a non-blocking reader, read as they come (a line arriving in
    pieces is kept until its end arrives)."""

    def __init__(self, reader: IO[bytes]) -> None:
        self.reader = reader
        self.partial = b""
        self.lines: list[str] = []

    def read(self) -> list[str]:
        """Every line read so far."""
        while chunk := self.reader.read(1 << 16):
            self.partial += chunk
        *complete, self.partial = self.partial.split(b"\n")
        self.lines += [line.decode() for line in complete]
        return self.lines


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
        # whatever the machine's default buffers, 1,000 lines are more than they hold
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        ours.setblocking(False)
        reader = ours.makefile("rb", buffering=0)
        write_end = theirs.detach()
    gw = StreamsGateway(tmp_path, _direct, write_end, extra_args=("--access-log", "stdout"))
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
    # the reader reads again: what waited flows, every line written whole or counted as
    # dropped; then each new line is written
    lines = Lines(reader)
    poll_until(lambda: sum("/x/stalled-" in line for line in lines.read()) + gw.dropped()
               >= REQUESTS, 20, message="every line read or counted")
    for index in range(20):
        _all_answered(gw, 1, f"again-{index}")
        poll_until(lambda: any(f"/x/again-{index}-" in line for line in lines.read()),  # noqa: B023
                   5, message=f"again-{index} logged")
    paths = [str(json.loads(line)["path"]).removesuffix(f"-{PADDING}") for line in lines.lines]
    assert [p for p in paths if p.startswith("/x/again-")] == [
        f"/x/again-{i}-0" for i in range(20)]
    stalled_paths = [p for p in paths if p.startswith("/x/stalled-")]
    assert len(stalled_paths) == len(set(stalled_paths))
    assert len(stalled_paths) + gw.dropped() == REQUESTS


def test_a_stderr_reader_that_stops_reading_holds_up_no_request(tmp_path: Path) -> None:
    """A warning per request (a WAF intervention, logged for each) on an unread stderr."""
    rule = ('SecRule REQUEST_URI "@beginsWith /x/" '
            f'"id:1000002,phase:1,deny,status:403,log,msg:\'every request {PADDING}\'"')
    config = lambda port: r.dump(r.gateway(port), r.route("main", rules=[  # noqa: E731
        r.rule({"prefix": "/x"}, directResponse={"status": 200, "body": "x"},
               policies=[{"waf": {"rules": [rule]}}])]))
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    reader = os.fdopen(read_end, "rb", buffering=0)
    gw = StreamsGateway(tmp_path, config, subprocess.DEVNULL, write_end,
                        extra_args=("--access-log", "off"))
    try:
        try:
            gw.start()
        finally:
            os.close(write_end)
        # a record is about 800 bytes (the WAF's own record shortens the path and message)
        _all_answered(gw, 8 * REQUESTS, "stalled", status=403)
        dropped = metric_value(gw.metrics(), "propylon_log_records_dropped_total")
        assert dropped > 0
        lines = Lines(reader)  # the reader reads again: what waited flows first
        poll_until(lambda: sum("/x/stalled-" in line for line in lines.read()) + dropped
                   >= 8 * REQUESTS, 20, message="every record read or counted")
        _all_answered(gw, 1, "again", status=403)
        poll_until(lambda: any("/x/again-0" in line for line in lines.read()), 20,
                   message="the warning of a request after the reader read again")
        assert sum("/x/stalled-" in line for line in lines.lines) < 8 * REQUESTS
        assert any("log record(s) dropped: stderr was not being read" in line
                   for line in lines.lines)
    finally:
        gw.stop()
        reader.close()

