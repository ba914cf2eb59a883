"""The ``propylon`` entry point (``cli/entry.py``) starts parsing ``run``'s and ``validate``'s
files before the command line parser loads: the paths it guesses from the arguments, and the
options it skips the values of, are those of the commands themselves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from propylon.cli.entry import VALUE_OPTIONS, config_paths
from propylon.cli.main import app


def test_the_options_taking_a_value_are_the_commands_own() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name, expected in VALUE_OPTIONS.items():
        params = commands[name].params
        assert any(param.param_type_name == "argument" for param in params)
        taking = {opt for param in params if param.param_type_name == "option"
                  and not param.is_flag and not param.count for opt in param.opts}
        assert taking == expected, name


@pytest.mark.parametrize(("args", "paths"), [
    (["validate", "a.yaml", "dir"], ["a.yaml", "dir"]),
    (["validate", "-o", "json", "a.yaml"], ["a.yaml"]),
    (["validate", "--output=json", "a.yaml"], ["a.yaml"]),
    (["run", "--workers", "2", "cfg", "--admin", "off", "--no-watch", "more"], ["cfg", "more"]),
    (["run", "--log-level=debug", "--", "-odd-name"], ["-odd-name"]),
    (["run", "cfg", "--help"], []),
    (["apply", "-f", "cfg"], []),
    (["--version"], []),
    ([], []),
])
def test_the_paths_of_a_command_line(args: list[str], paths: list[str]) -> None:
    assert config_paths(args) == paths


def test_python_m_propylon_validates_through_the_entry_point(tmp_path: Path) -> None:
    """Files parsed ahead by the entry point are the command's (the same result)."""
    (tmp_path / "gateway.yaml").write_text("""\
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  listeners: [{name: web, port: 8080, protocol: HTTP}]
""")
    done = subprocess.run([sys.executable, "-m", "propylon", "validate", "-o", "text",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: 1 gateway(s), 0 rule(s)"), done.stdout
