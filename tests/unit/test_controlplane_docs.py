"""docs/controlplane.md's command synopsis says what the CLI accepts (it had drifted:
``status [-o json]`` while the command takes text, yaml and json; nothing about ``diff``'s
exit 3)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from propylon.cli.params import EXIT_NEGATIVE, GetFormat, StatusFormat

DOC = Path(__file__).parents[2] / "docs" / "controlplane.md"


def synopsis() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("```", 2)[1]  # the first code block: one command per line
    return [line for line in block.splitlines() if line.startswith("propylon ")]


@pytest.mark.parametrize(("command", "choices"), [
    pytest.param("get", GetFormat, id="get"),
    pytest.param("status", StatusFormat, id="status"),
])
def test_output_choices_are_the_clis(command: str, choices: type) -> None:
    (line,) = [line for line in synopsis() if line.startswith(f"propylon {command} ")]
    written = re.search(r"-o ([a-z|]+)", line)
    assert written is not None, line
    assert written.group(1).split("|") == [c.value for c in choices], line


def test_every_client_command_is_in_the_synopsis() -> None:
    commands = {line.split()[1] for line in synopsis()}
    assert {"control", "proxy", "apply", "diff", "get", "status", "explain"} <= commands


def test_diffs_exit_code_for_changes_is_documented() -> None:
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    assert f"**Exit {EXIT_NEGATIVE} when something would change**" in text
