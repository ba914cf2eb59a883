"""The ``propylon`` command: thin wrappers over library functions."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from propylon.cli.params import (
    EXIT_FAILED,
    EXIT_NEGATIVE,
    EXIT_OK,
    AccessLogFormat,
    AccessLogFormatOpt,
    AccessLogOpt,
    AdminOpt,
    Command,
    DrainTimeoutOpt,
    Group,
    LogFormat,
    LogFormatOpt,
    LogLevel,
    LogLevelOpt,
    ValidateFormat,
    WorkersOpt,
    configure_logging,
)

app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    help="Propylon API gateway.",
    pretty_exceptions_enable=False,
)

PathsArg = Annotated[
    list[Path], typer.Argument(metavar="PATH", help="YAML files or folders of them.")
]


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib import metadata

        try:
            version = metadata.version("propylon")
        except metadata.PackageNotFoundError:  # run from a source tree that is not installed
            version = "unknown"
        typer.echo(f"propylon {version}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Propylon API gateway."""


def parse_hostport(value: str) -> tuple[str, int] | None:
    if value == "off":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter(f"expected HOST:PORT or off, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@app.command(cls=Command)
def run(
    paths: PathsArg,
    workers: WorkersOpt = 1,
    admin: AdminOpt = "127.0.0.1:9901",
    access_log: AccessLogOpt = "stdout",
    drain_timeout: DrainTimeoutOpt = 30.0,
    watch: Annotated[
        bool, typer.Option(help="Reload when the files, or secret files they read, change.")
    ] = True,
    log_level: LogLevelOpt = LogLevel.info,
    log_format: LogFormatOpt = LogFormat.text,
    access_log_format: AccessLogFormatOpt = AccessLogFormat.json,
) -> None:
    """Run a standalone gateway from files; hot-reloads them on change and on SIGHUP."""
    from propylon.config.parse_pool import read_ahead

    read_ahead(paths)  # the other cores parse while this process imports the rest
    import uvloop

    from propylon.file_source import FileSource
    from propylon.proxy.supervisor import Supervisor, run_supervisor
    from propylon.standalone import build_snapshot

    configure_logging(log_level, log_format)
    admin_addr = parse_hostport(admin)
    supervisor = Supervisor(
        workers=workers,
        access_log=access_log,
        log_level=log_level.value,
        log_format=log_format.value,
        access_log_format=access_log_format.value,
        drain_timeout=drain_timeout,
    )
    source = FileSource(
        lambda: build_snapshot(paths), [str(p) for p in paths] if watch else [],
        first_build=lambda read, preview: build_snapshot(paths, parallel=True, read=read,
                                                         preview=preview))
    code = uvloop.run(run_supervisor(supervisor, admin_addr, start=source.start,
                                     background=[source.watch], reload=source.reload))
    raise typer.Exit(code)


@app.command(cls=Command)
def sidecar(
    app_port: Annotated[int, typer.Option(
        min=1, max=65535, metavar="PORT", help="Port of the local app (1-65535).")],
    listen: Annotated[str, typer.Option(
        metavar="HOST:PORT", help="Where the sidecar listens.")] = "0.0.0.0:8000",
    policy: Annotated[list[Path] | None, typer.Option(
        metavar="FILE", help="YAML file of the team's policies (repeatable).")] = None,
    workers: WorkersOpt = 1,
    admin: AdminOpt = "127.0.0.1:9901",
    access_log: AccessLogOpt = "stdout",
    drain_timeout: DrainTimeoutOpt = 30.0,
    log_level: LogLevelOpt = LogLevel.info,
    log_format: LogFormatOpt = LogFormat.text,
    access_log_format: AccessLogFormatOpt = AccessLogFormat.json,
) -> None:
    """A gateway for one local app: LISTEN to 127.0.0.1:APP_PORT through the team's policies."""
    import uvloop

    from propylon.file_source import FileSource
    from propylon.proxy.supervisor import Supervisor, run_supervisor
    from propylon.sidecar import build_sidecar_snapshot

    configure_logging(log_level, log_format)
    bind = parse_hostport(listen)
    if bind is None:
        raise typer.BadParameter("--listen needs HOST:PORT")
    files = list(policy or [])
    supervisor = Supervisor(
        workers=workers,
        access_log=access_log,
        log_level=log_level.value,
        log_format=log_format.value,
        access_log_format=access_log_format.value,
        drain_timeout=drain_timeout,
    )
    source = FileSource(lambda: build_sidecar_snapshot(app_port, bind[0], bind[1], files),
                        [str(p) for p in files])
    code = uvloop.run(run_supervisor(supervisor, parse_hostport(admin), start=source.start,
                                     background=[source.watch], reload=source.reload))
    raise typer.Exit(code)


@app.command(cls=Command)
def validate(
    paths: PathsArg,
    output: Annotated[ValidateFormat, typer.Option(
        "-o", "--output", case_sensitive=False,
        help="text: one problem a line, file:line[:column]: message; json: one document.")
    ] = ValidateFormat.text,
) -> None:
    """Check configuration files as `run` would; every problem with file:line; exit 1 on any."""
    from propylon.config.parse_pool import read_ahead

    read_ahead(paths)  # the other cores parse while this process imports the rest
    from propylon.cli.problems import check_paths

    kept: list[object] = []  # never freed: the command exits (``_exit_now``)
    check = check_paths(paths, keep=kept)
    if output is ValidateFormat.json:
        typer.echo(json.dumps(check.to_json(), indent=2))
    else:
        for problem in check.problems:
            typer.echo(str(problem), err=True)
    if check.failed:
        if output is ValidateFormat.text:
            typer.echo(f"{len(check.problems)} problem(s)", err=True)
        _exit_now(EXIT_FAILED)
    if output is ValidateFormat.text:
        assert check.built is not None
        built = check.built
        warnings = f", {len(check.problems)} warning(s)" if check.problems else ""
        typer.echo(
            f"ok: {built.gateways} gateway(s), {built.rules} rule(s), "
            f"version {built.version}{warnings}"
        )
    _exit_now(0)


def _exit_now(code: int) -> NoReturn:
    """End a one-shot command once its output is out, without freeing the configuration it
    built object by object (at 10,000 Routes the interpreter's teardown took a third of
    ``validate``'s time)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@app.command(cls=Command)
def explain(
    method: Annotated[str, typer.Argument(metavar="METHOD", help="HTTP method, e.g. GET.")],
    url: Annotated[str, typer.Argument(
        metavar="URL", help="Full URL, e.g. http://shop.example.com:8080/api")],
    config: Annotated[list[Path] | None, typer.Option(
        "-c", "--config", metavar="PATH", help="Config file or folder (repeatable).")] = None,
    control: Annotated[str | None, typer.Option(
        envvar="PROPYLON_CONTROL", metavar="URL",
        help="Explain against a control plane's resources instead of files.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Control-plane token file (or PROPYLON_TOKEN).")] = None,
    ca_file: Annotated[Path | None, typer.Option(
        metavar="FILE", help="CA to trust for an https control plane.")] = None,
    header: Annotated[list[str] | None, typer.Option(
        "-H", "--header", metavar="NAME:VALUE", help="A request header (repeatable).")] = None,
    listener: Annotated[str | None, typer.Option(
        metavar="PORT|NAME|NS/GATEWAY/NAME",
        help="The listener the request arrives on (default: the URL's port; without one, "
             "the scheme's default port or the only listener of its protocol).")] = None,
    client_ip: Annotated[str, typer.Option(
        metavar="IP", help="Client address to assume.")] = "127.0.0.1",
) -> None:
    """Which Gateway, rule, policies (in order) and upstream a request would get; exit 3: none."""
    if (config is None) == (control is None):
        raise typer.BadParameter("give either -c CONFIG or --control URL")
    headers = _parse_headers(header or [])
    if config:
        from propylon.config.parse_pool import read_ahead

        read_ahead(config)  # the other cores parse while this process imports the rest
    from propylon.explain import ListenerChoiceError
    from propylon.explain import explain as explain_request
    from propylon.standalone import build_snapshot

    # one-shot, as validate: files parsed on every core, nothing hashed, nothing freed
    result = (build_snapshot(config, parallel=True, sealed=False) if config
              else _control_snapshot(control, token_file, ca_file))
    if result.snapshot is None:
        for error in result.errors:
            typer.echo(error, err=True)  # file:line: message, as validate prints it
        raise typer.Exit(EXIT_FAILED)
    try:
        explanation = explain_request(result.snapshot, method, url, headers, client_ip,
                                      listener)
    except ListenerChoiceError as exc:
        raise typer.BadParameter(str(exc), param_hint="--listener") from exc
    typer.echo("\n".join(explanation.lines))
    _exit_now(EXIT_OK if explanation.matched else EXIT_NEGATIVE)


def _parse_headers(items: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep:
            raise typer.BadParameter(f"header must be name:value, got {item!r}",
                                     param_hint="-H")
        headers[name.strip().lower()] = value.strip()
    return headers


from propylon.cli import control as _control  # noqa: E402
from propylon.cli import importer as _importer  # noqa: E402
from propylon.cli import plugins as _plugins  # noqa: E402

_control.register(app)
_plugins.register(app)
_importer.register(app)


def _control_snapshot(control: str | None, token_file: Path | None, ca_file: Path | None) -> Any:
    """Translate the control plane's resources here, as the control plane does."""
    from propylon.cli.control import _client
    from propylon.config import load_data
    from propylon.controlplane.client import ClientError
    from propylon.controlplane.resources import strip_server_fields
    from propylon.standalone import BuildResult, build_from_resources

    assert control is not None
    try:
        items = _client(control, token_file, ca_file).list_all()
    except (ClientError, OSError) as exc:
        return BuildResult(None, [f"error: control plane {control}: {exc}"])
    resources, errors = [], []
    for item in items:
        data, _ = strip_server_fields(item)
        loaded = load_data(data, f"{item.get('kind')} from {control}")
        resources += loaded.resources
        errors += [str(e) for e in loaded.errors]
    return BuildResult(None, errors) if errors else build_from_resources(resources)


def main() -> None:
    app(prog_name="propylon")


if __name__ == "__main__":
    main()
