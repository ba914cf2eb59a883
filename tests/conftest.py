"""The summary sections of ``tests.support.report``, printed by the process that shows the run:
pytest alone, or pytest-xdist's controller, which gathers every worker's."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.support import report


def _worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _worker(session.config):
        session.config.workeroutput["report"] = report.export()  # type: ignore[attr-defined]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    exported = getattr(node, "workeroutput", {}).get("report")
    if exported:
        report.merge(exported)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    if _worker(config):
        return
    for section, lines in report.SECTIONS.items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)
    target = os.environ.get("PROPYLON_FIGURES_FILE")
    if target and report.FIGURES:
        with open(target, "w") as out:
            json.dump(report.FIGURES, out, indent=2, default=str)
