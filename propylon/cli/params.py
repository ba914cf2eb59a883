"""What every ``propylon`` command shares: exit codes, fixed-choice option values, and help
that names values (``PATH``, ``HOST:PORT``) instead of Python types (``<list[Path]>``).

Exit codes, the same for every command (docs/operations.md, "Exit codes"):

- ``EXIT_OK`` (0): done.
- ``EXIT_FAILED`` (1): the operation failed: invalid configuration, the control plane could not
  be reached or refused the request.
- ``EXIT_USAGE`` (2): the command line is wrong: unknown command or option, a bad value, no
  token to authenticate with. Click exits 2 for its own usage errors.
- ``EXIT_NEGATIVE`` (3): the command worked and its answer is "no": ``diff`` found changes,
  ``explain`` found nothing that would serve the request.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NEGATIVE = 3


def usage_error(message: str) -> typer.Exit:
    """Print ``message`` and return the exit to raise (for usage errors click does not see,
    such as a missing token)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def failure(message: object) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_FAILED)


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class AccessLogFormat(StrEnum):
    json = "json"
    combined = "combined"


def configure_logging(level: LogLevel, log_format: LogFormat = LogFormat.text) -> None:
    from propylon.observability.logs import configure_logging as configure

    configure(level.value, log_format.value)


# the process flags `run`, `sidecar` and `proxy` share
WorkersOpt = Annotated[int, typer.Option(
    min=1, metavar="N", help="Worker processes sharing the ports (SO_REUSEPORT).")]
AdminOpt = Annotated[str, typer.Option(
    metavar="HOST:PORT|off", help="Admin listener (/ready, /metrics, ...), or off.")]
AccessLogOpt = Annotated[str, typer.Option(
    metavar="stdout|off|PATH", help="Where the JSON access log goes.")]
DrainTimeoutOpt = Annotated[float, typer.Option(
    metavar="SECONDS", help="Time in-flight requests get on SIGTERM.")]
LogLevelOpt = Annotated[LogLevel, typer.Option(case_sensitive=False, help="Log level.")]
LogFormatOpt = Annotated[LogFormat, typer.Option(
    case_sensitive=False, help="The gateway's own logs: text, or one JSON object per line.")]
AccessLogFormatOpt = Annotated[AccessLogFormat, typer.Option(
    case_sensitive=False, help="Access log lines: JSON, or the combined log format.")]


class GetFormat(StrEnum):
    table = "table"
    yaml = "yaml"
    json = "json"


class StatusFormat(StrEnum):
    text = "text"
    yaml = "yaml"
    json = "json"


class ValidateFormat(StrEnum):
    text = "text"
    json = "json"


# -- help: metavars, not Python types ----------------------------------------------------------
class _PlainArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the argument's metavar (PATH..., KIND) already says what goes there


class _PlainOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        return super().display_type_rich(ctx)  # choices, shown as <a|b|c>


def _plain(param: Any) -> Any:
    # Typer builds its parameters itself, with no hook to choose their class; these subclasses
    # only change how help shows a value, so swapping the class in place is safe.
    if type(param) is TyperArgument:
        param.__class__ = _PlainArgument
    elif type(param) is TyperOption:
        param.__class__ = _PlainOption
    return param


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return [_plain(p) for p in super().get_params(ctx)]


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return [_plain(p) for p in super().get_params(ctx)]
