"""The ``propylon`` command's entry point (the console script and ``python -m propylon``).

For ``run`` and ``validate`` it starts parsing the configuration on the other cores
(``parse_pool.read_ahead``) before loading the command-line parser: typer, click and the
pydantic that typer's parameter coercion imports take 0.15-0.25 s, during which the other
cores would otherwise wait. The command reads the same paths again once parsed and takes the
work over (``read_ahead`` keeps a read-ahead of the same texts). The paths are guessed from
the arguments here; a wrong guess (say, an unknown option's value taken for a path) only
loses the work read ahead: the command compares the texts it reads with those.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# The options of these commands that take a value; every other option is a flag.
# tests/unit/test_cli_entry.py checks them against the commands' own parameters.
VALUE_OPTIONS: dict[str, frozenset[str]] = {
    "run": frozenset({
        "--workers", "--admin", "--access-log", "--drain-timeout", "--log-level",
        "--log-format", "--access-log-format",
    }),
    "validate": frozenset({"-o", "--output"}),
}


def config_paths(args: Sequence[str]) -> list[str]:
    """The configuration paths of a ``run`` or ``validate`` command line (``args`` without
    the program's name), or none for any other command or a request for help."""
    if not args or args[0] not in VALUE_OPTIONS:
        return []
    takes_value = VALUE_OPTIONS[args[0]]
    paths: list[str] = []
    rest = iter(args[1:])
    for arg in rest:
        if arg == "--":
            paths += rest
        elif arg == "--help":
            return []
        elif arg.startswith("-") and arg != "-":
            if arg in takes_value:
                next(rest, None)
        else:
            paths.append(arg)
    return paths


def main() -> None:
    paths = config_paths(sys.argv[1:])
    if paths:
        from propylon.config.parse_pool import read_ahead

        read_ahead(paths)
    from propylon.cli.main import main as command

    command()
