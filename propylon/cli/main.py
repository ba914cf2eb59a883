"""The ``propylon`` command: thin wrappers over library functions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from propylon.config import load_data

if TYPE_CHECKING:
    from propylon.ir import SnapshotIR

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Propylon API gateway.",
    pretty_exceptions_enable=False,
)

PathsArg = Annotated[list[Path], typer.Argument(help="YAML files or folders of them.")]


def parse_hostport(value: str) -> tuple[str, int] | None:
    if value == "off":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter(f"expected HOST:PORT or off, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@app.command()
def run(
    paths: PathsArg,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (SO_REUSEPORT).")] = 1,
    admin: Annotated[str, typer.Option(help="Admin listener HOST:PORT, or off.")] = (
        "127.0.0.1:9901"
    ),
    access_log: Annotated[str, typer.Option(help="stdout, off, or a file path.")] = "stdout",
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds in-flight requests get on SIGTERM.")
    ] = 30.0,
    watch: Annotated[
        bool, typer.Option(help="Reload when the files, or secret files they read, change.")
    ] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run a standalone gateway from files; hot-reloads them on change and on SIGHUP."""
    import uvloop

    from propylon.proxy.supervisor import Supervisor, run_supervisor
    from propylon.standalone import build_snapshot

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s propylon %(levelname)s %(message)s"
    )
    admin_addr = parse_hostport(admin)
    supervisor = Supervisor(
        build=lambda: build_snapshot(paths),
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        drain_timeout=drain_timeout,
    )
    watched = [str(p) for p in paths] if watch else []
    code = uvloop.run(run_supervisor(supervisor, watched, admin_addr))
    raise typer.Exit(code)


@app.command()
def sidecar(
    app_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the local app.")],
    listen: Annotated[str, typer.Option(help="Where the sidecar listens, HOST:PORT.")] = (
        "0.0.0.0:8000"
    ),
    policy: Annotated[
        list[Path] | None, typer.Option(help="YAML file of the team's policies (repeatable).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    admin: Annotated[str, typer.Option(help="Admin listener HOST:PORT, or off.")] = (
        "127.0.0.1:9901"
    ),
    access_log: Annotated[str, typer.Option(help="stdout, off, or a file path.")] = "stdout",
    drain_timeout: Annotated[float, typer.Option(help="Grace on SIGTERM, seconds.")] = 30.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """A gateway for one local app (microgateway): everything on LISTEN goes to 127.0.0.1:APP_PORT
    through the team's policies."""
    import uvloop

    from propylon.proxy.supervisor import Supervisor, run_supervisor
    from propylon.sidecar import build_sidecar_snapshot

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s propylon %(levelname)s %(message)s"
    )
    bind = parse_hostport(listen)
    if bind is None:
        raise typer.BadParameter("--listen needs HOST:PORT")
    files = list(policy or [])
    supervisor = Supervisor(
        build=lambda: build_sidecar_snapshot(app_port, bind[0], bind[1], files),
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        drain_timeout=drain_timeout,
    )
    code = uvloop.run(run_supervisor(supervisor, [str(p) for p in files], parse_hostport(admin)))
    raise typer.Exit(code)


@app.command()
def validate(paths: PathsArg) -> None:
    """Check configuration files; print every problem with file:line; exit 1 on any."""
    from propylon.standalone import build_snapshot

    result = build_snapshot(paths)
    for error in result.errors:
        typer.echo(f"error: {error}", err=True)
    for warning in result.warnings:
        typer.echo(f"invalid: {warning}", err=True)
    if result.errors or result.warnings:
        typer.echo(
            f"{len(result.errors)} error(s), {len(result.warnings)} invalid resource(s)",
            err=True,
        )
        raise typer.Exit(1)
    assert result.snapshot is not None
    problem = _compile_problem(result.snapshot)
    if problem is not None:
        # what `run` would refuse when installing: files the policies and upstreams load
        # (CA files, keys), clashing listeners
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)
    rules = sum(len(g.rules) for g in result.snapshot.gateways)
    typer.echo(
        f"ok: {len(result.snapshot.gateways)} gateway(s), {rules} rule(s), "
        f"version {result.snapshot.version}"
    )


def _compile_problem(snapshot: SnapshotIR) -> str | None:
    """Compile ``snapshot`` as a proxy would before serving it (nothing is started); the
    reason it cannot run, or None."""
    import asyncio

    from propylon.runtime.compile import Services, compile_snapshot

    async def check() -> str | None:
        try:
            compile_snapshot(snapshot, Services.scratch(asyncio.get_running_loop()))
        except Exception as exc:
            return str(exc)
        return None

    return asyncio.run(check())


@app.command()
def explain(
    method: Annotated[str, typer.Argument(help="HTTP method, e.g. GET.")],
    url: Annotated[str, typer.Argument(help="Full URL, e.g. http://shop.example.com:8080/api")],
    config: Annotated[
        list[Path] | None, typer.Option("-c", "--config", help="Config files/folders.")
    ] = None,
    control: Annotated[
        str | None,
        typer.Option(envvar="PROPYLON_CONTROL", help="Explain against a control plane's "
                     "resources instead of files."),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="Control-plane token file (or PROPYLON_TOKEN).")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="CA to trust for an https control plane.")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("-H", "--header", help="name:value (repeatable).")
    ] = None,
    client_ip: Annotated[str, typer.Option(help="Client address to assume.")] = "127.0.0.1",
) -> None:
    """Show which Gateway, rule, policies (in order) and upstream a request would get."""
    from propylon.explain import explain as explain_request
    from propylon.standalone import build_snapshot

    if (config is None) == (control is None):
        raise typer.BadParameter("give either -c CONFIG or --control URL")
    result = build_snapshot(config) if config else _control_snapshot(control, token_file, ca_file)
    if result.snapshot is None:
        for error in result.errors:
            typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)
    headers: dict[str, str] = {}
    for item in header or []:
        name, sep, value = item.partition(":")
        if not sep:
            raise typer.BadParameter(f"header must be name:value, got {item!r}")
        headers[name.strip().lower()] = value.strip()
    explanation = explain_request(result.snapshot, method, url, headers, client_ip)
    typer.echo("\n".join(explanation.lines))
    if not explanation.matched:
        raise typer.Exit(2)


from propylon.cli import control as _control  # noqa: E402

_control.register(app)


def _control_snapshot(control: str | None, token_file: Path | None, ca_file: Path | None) -> Any:
    """Translate the control plane's resources here, as the control plane does."""
    from propylon.cli.control import _client
    from propylon.controlplane.client import ClientError
    from propylon.controlplane.resources import strip_server_fields
    from propylon.standalone import BuildResult, build_from_resources

    assert control is not None
    try:
        items = _client(control, token_file, ca_file).list_all()
    except (ClientError, OSError) as exc:
        return BuildResult(None, [f"control plane {control}: {exc}"])
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
