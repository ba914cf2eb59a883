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
from tests.support.client import roundtrip
from tests.support.gateway import REPO, Config, Gateway, metric_value
from tests.support.net import poll_until

# a line is about 300 bytes: 1,000 of them are several times what a pipe (64 KiB) or a
# socket's buffers hold
REQUESTS = 1_000


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
    for index in range(count):
        response = roundtrip(gw.port, "GET", f"/x/{tag}-{index}", timeout=5)
        assert response.status == status, f"request {index}: {response.status}"


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


def test_a_stderr_reader_that_stops_reading_holds_up_no_request(tmp_path: Path) -> None:
    """A warning per request (a WAF intervention, logged for each) on an unread stderr."""
    rule = ('SecRule REQUEST_URI "@beginsWith /x/" '
            '"id:1000002,phase:1,deny,status:403,log,msg:\'every request\'"')
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
        _all_answered(gw, REQUESTS, "stalled", status=403)
        logged = _text_lines(reader)  # what stderr took before it was full: whole lines
        assert sum("/x/stalled-" in line for line in logged) < REQUESTS
        assert metric_value(gw.metrics(), "propylon_log_records_dropped_total") > 0
        _all_answered(gw, 1, "again", status=403)
        later: list[str] = []
        poll_until(lambda: (later.extend(_text_lines(reader)) or
                            any("/x/again-0" in line for line in later)), 5,
                   message="the warning of a request after the reader read again")
        assert any("log record(s) dropped: stderr was not being read" in line
                   for line in later), later
    finally:
        gw.stop()
        reader.close()


def _text_lines(reader: IO[bytes]) -> list[str]:
    data = b""
    while chunk := reader.read(1 << 16):
        data += chunk
    assert not data or data.endswith(b"\n")
    return data.decode().splitlines()
