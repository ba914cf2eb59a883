"""The configuration files' watch begins after the first build has read them: a file written
in between is read once the watch runs (``FileSource._watch_config``), not left unserved
until the next change. Real files, a real watch (watchfiles), a supervisor without workers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from propylon.file_source import WATCH_READY_MS, FileSource
from propylon.proxy.supervisor import Supervisor
from propylon.standalone import build_snapshot
from tests.support.net import free_port
from tests.support.watching import watch_until

PORT = free_port()


def config(*paths: str) -> str:
    rules = "".join(f"""
    - matches: [{{path: {{exact: {path}}}}}]
      directResponse: {{status: 200}}""" for path in paths)
    return f"""apiVersion: propylon.dev/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  listeners: [{{name: web, port: {PORT}, address: 127.0.0.1}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: r}}
spec:
  rules:{rules}
"""


def served_paths(supervisor: Supervisor) -> set[str]:
    assert supervisor.snapshot is not None
    return {rule.matches[0].path.value for rule in supervisor.snapshot.gateways[0].rules}


def test_a_file_written_before_the_watch_runs_is_read_once_it_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gateway.yaml").write_text(config("/a"))

    async def scenario() -> None:
        supervisor = Supervisor()
        monkeypatch.setattr(supervisor, "start_workers", lambda: None)  # no processes here
        source = FileSource(lambda: build_snapshot([tmp_path]), [str(tmp_path)])
        await source.start(supervisor)
        assert served_paths(supervisor) == {"/a"}
        (tmp_path / "gateway.yaml").write_text(config("/a", "/b"))  # no watch yet
        await watch_until(supervisor, source.watch(supervisor),
                          lambda: served_paths(supervisor) == {"/a", "/b"},
                          "the change was never read", 10 * WATCH_READY_MS / 1000)
        assert supervisor.reloads.succeeded == 1

    asyncio.run(scenario())
