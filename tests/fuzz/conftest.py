"""The fuzz runs' figures (executions, rate, crashes, known issues) in pytest's final summary,
where ``scripts/test`` shows them even when every test passed."""

from __future__ import annotations

import pytest

SUMMARIES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARIES:
        terminalreporter.section("fuzzing")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
