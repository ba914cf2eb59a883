"""The gateway's own logs and its access log as operators ship them (issue #16 item 5):
``--log-format json`` (one JSON object per line, also from workers), ``--access-log-format
combined``, and SIGUSR1 reopening the access log file after a rotation."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct

from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import metric_value
from tests.support.net import free_port, poll_until
from tests.support.upstream import Reply


def config(app_port: int):
    return lambda port: r.dump(
        r.gateway(port),
        r.route("main", rules=[r.rule(forward=r.forward("app"))]),
        r.upstream("app", app_port),
    )


def test_json_logs_one_object_per_line(gateways, upstreams) -> None:
    app = upstreams("app")
    down = free_port()  # an extAuth service nobody runs: the worker logs a warning
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("main", rules=[r.rule(forward=r.forward("app"), policies=[
            {"extAuth": {"url": f"http://127.0.0.1:{down}/"}}])]),
        r.upstream("app", app.port),
    ), extra_args=("--log-format", "json"))
    assert roundtrip(gw.port, "GET", "/").status == 403
    poll_until(lambda: "extAuth service" in gw.stderr_text(), message="the worker's warning")
    gw.write_config("not: [valid")  # a refused reload logs an error with its reason
    os.kill(gw.process.pid, signal.SIGHUP)
    poll_until(lambda: "refused" in gw.stderr_text(), message="the refused reload logged")
    records = [json.loads(line) for line in gw.stderr_text().splitlines() if line.strip()]
    assert records, "no log records"
    for record in records:
        assert {"time", "level", "logger", "process", "message"} <= record.keys(), record
    processes = {record["process"] for record in records}
    assert "propylon" in processes
    assert any(p.startswith("worker[") for p in processes), processes
    assert any(record["level"] in ("warning", "error") for record in records), records


def test_text_logs_by_default(gateways, upstreams) -> None:
    app = upstreams("app")
    gw = gateways(config(app.port))
    first = gw.stderr_text().splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (propylon|worker\[\d+\]) INFO ", first)


def test_combined_access_log(gateways, upstreams) -> None:
    app = upstreams("app")
    gw = gateways(config(app.port), extra_args=("--access-log-format", "combined"))
    headers = {"user-agent": 'curl/8 "quoted"', "referer": "http://example.test/"}
    assert roundtrip(gw.port, "GET", "/path?q=1", headers).status == 200
    assert gw.access_log_path is not None
    line = poll_until(lambda: gw.access_log_path.read_text().strip(), message="a line")
    pattern = (r'^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
               r'"GET /path\?q=1 HTTP/1\.1" 200 \d+ "http://example\.test/" '
               r'"curl/8 \\"quoted\\"" \d+\.\d{3} "[0-9a-f-]{36}"$')
    assert re.match(pattern, line), line
    # the request's own version, and a missing referer and user agent quoted, as nginx does
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    line = poll_until(lambda: [x for x in gw.access_log_path.read_text().splitlines()
                               if "/old" in x], message="the HTTP/1.0 line")[0]
    assert '"GET /old HTTP/1.0" 200 ' in line and ' "-" "-" ' in line, line


def test_access_log_gives_the_upstreams_status_and_time(gateways, upstreams) -> None:
    """DESIGN §6: the access log carries the upstream's time and status: those of its last
    try, absent when no upstream answered."""
    app = upstreams("app")
    app.handler = lambda request: (Reply(status=503, delay=0.05) if request.path == "/down"
                                   else app.echo(request))
    gw = gateways(lambda port: r.dump(
        r.gateway(port),
        r.route("main", rules=[
            r.rule(forward=r.forward("app")),
            r.rule({"exact": "/direct"}, directResponse={"status": 204}),
        ]),
        r.upstream("app", app.port),
    ))
    assert roundtrip(gw.port, "GET", "/up").status == 200
    assert roundtrip(gw.port, "GET", "/down").status == 503
    assert roundtrip(gw.port, "GET", "/direct").status == 204
    assert gw.access_log_path is not None
    lines = poll_until(lambda: (found := {d["path"]: d for d in map(
        json.loads, gw.access_log_path.read_text().splitlines())}).keys() >= {
        "/up", "/down", "/direct"} and found, message="three lines")
    assert lines["/up"]["upstream_status"] == 200
    assert 0 <= lines["/up"]["upstream_duration_ms"] <= lines["/up"]["duration_ms"]
    assert lines["/down"]["upstream_status"] == 503 and lines["/down"]["status"] == 503
    assert lines["/down"]["upstream_duration_ms"] >= 50
    assert "upstream_status" not in lines["/direct"]
    assert "upstream_duration_ms" not in lines["/direct"]


def test_sigusr1_reopens_the_access_log(gateways, upstreams) -> None:
    app = upstreams("app")
    gw = gateways(config(app.port), workers=2)
    log = gw.access_log_path
    assert log is not None
    assert roundtrip(gw.port, "GET", "/before").status == 200
    poll_until(lambda: "/before" in log.read_text(), message="the first line")
    rotated = log.with_name("access.log.1")
    os.rename(log, rotated)  # what logrotate does, then it signals the process
    os.kill(gw.process.pid, signal.SIGUSR1)
    poll_until(log.exists, message="a new access log file")
    for _ in range(10):  # both workers get requests on SO_REUSEPORT sooner or later
        assert roundtrip(gw.port, "GET", "/after").status == 200
    poll_until(lambda: "/after" in log.read_text(), message="new lines in the new file")
    assert "/after" not in rotated.read_text()
    assert "/before" not in log.read_text()


def test_a_request_its_client_left_is_logged_as_499(gateways, upstreams) -> None:
    """As nginx logs 499 "client closed request": a client that hangs up while the upstream
    is still working leaves a line and a count, not nothing."""
    app = upstreams("app")
    app.handler = lambda request: Reply(body=b"late", delay=1.0)
    gw = gateways(config(app.port))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /left HTTP/1.1\r\nHost: x\r\n\r\n")
        poll_until(lambda: app.requests, message="the request upstream")
        # a reset, not a FIN: a client that only half-closes still gets its answer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    line = poll_until(lambda: next((x for x in gw.access_log() if x["path"] == "/left"), None),
                      message="the abandoned request's line")
    assert line["status"] == 499 and line["upstream"] is not None
    assert metric_value(gw.metrics(), "propylon_requests_by_status_total", status="4xx") >= 1
