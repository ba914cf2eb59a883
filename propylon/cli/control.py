"""Connected-mode commands: ``control``, ``proxy``, and the GitOps client (``apply``,
``diff``, ``get``, ``status``). Thin wrappers over ``propylon.controlplane``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

ControlOpt = Annotated[str, typer.Option(
    "--control", envvar="PROPYLON_CONTROL", help="Control plane URL.")]
TokenFileOpt = Annotated[Path | None, typer.Option(
    "--token-file", help="File holding the bearer token (else $PROPYLON_TOKEN, else "
                         "~/.config/propylon/token).")]
CaFileOpt = Annotated[Path | None, typer.Option(
    "--ca-file", help="CA certificate to trust for an https control plane.")]
_DEFAULT_CONTROL = "http://127.0.0.1:9000"


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s propylon %(levelname)s %(message)s")


def _client(control: str, token_file: Path | None, ca_file: Path | None = None) -> Any:
    from propylon.controlplane.client import Client, resolve_token

    try:
        token = resolve_token(token_file)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: no token: {exc}", err=True)
        raise typer.Exit(2) from exc
    return Client(control, token, ca_file=ca_file)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def control(
    listen: Annotated[str, typer.Option(help="HOST:PORT of the REST API.")] = "127.0.0.1:9000",
    store: Annotated[str, typer.Option(
        help="sqlite:///PATH (embedded) or etcd://HOST:PORT.")] = "sqlite:///propylon.db",
    token_file: Annotated[Path | None, typer.Option(
        help="Bearer token file (created 0600 if missing).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Serve HTTPS with this certificate.")]
    = None,
    tls_key: Annotated[Path | None, typer.Option(help="Private key of --tls-cert.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the control plane: store, translation, REST API and distribution to proxies."""
    import uvloop

    from propylon.cli.main import parse_hostport
    from propylon.controlplane.server import run_control, tls_context
    from propylon.controlplane.token import DEFAULT_TOKEN_FILE

    _logging(log_level)
    address = parse_hostport(listen)
    if address is None:
        raise typer.BadParameter("--listen cannot be off")
    tls = tls_context(tls_cert, tls_key)
    code = uvloop.run(run_control(*address, store, token_file or DEFAULT_TOKEN_FILE, tls))
    raise typer.Exit(code)


def proxy(
    control: ControlOpt = _DEFAULT_CONTROL,
    gateway: Annotated[str, typer.Option(help="The Gateway to serve, NAMESPACE/NAME.")] = "",
    token_file: TokenFileOpt = None,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Where the last good IR is kept (default ~/.cache/propylon).")] = None,
    ca_file: CaFileOpt = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (SO_REUSEPORT).")] = 1,
    admin: Annotated[str, typer.Option(help="Admin listener HOST:PORT, or off.")] = (
        "127.0.0.1:9901"),
    access_log: Annotated[str, typer.Option(help="stdout, off, or a file path.")] = "stdout",
    drain_timeout: Annotated[float, typer.Option(
        help="Seconds in-flight requests get on SIGTERM.")] = 30.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run a proxy whose configuration comes from the control plane."""
    import ssl

    import uvloop

    from propylon.cli.main import parse_hostport
    from propylon.controlplane.agent import Agent
    from propylon.controlplane.cache import DEFAULT_CACHE_DIR, IRCache
    from propylon.controlplane.client import resolve_token
    from propylon.proxy.supervisor import Supervisor, run_supervisor

    _logging(log_level)
    if gateway.count("/") != 1:
        raise typer.BadParameter("--gateway must be NAMESPACE/NAME")
    try:
        token = resolve_token(token_file)
    except (OSError, ValueError) as exc:
        raise _fail(ValueError(f"no token: {exc}")) from exc
    agent = Agent(
        control=control.rstrip("/"), gateway=gateway, token=token,
        cache=IRCache(cache_dir or DEFAULT_CACHE_DIR, gateway),
        ssl_context=ssl.create_default_context(cafile=ca_file) if ca_file else None,
    )
    supervisor = Supervisor(workers=workers, access_log=access_log, log_level=log_level,
                            drain_timeout=drain_timeout)
    code = uvloop.run(run_supervisor(supervisor, [], parse_hostport(admin), start=agent.start,
                                     background=[agent.run, agent.report_health]))
    raise typer.Exit(code)


def apply(
    file: Annotated[list[Path], typer.Option("-f", "--file", help="YAML file or folder.")],
    prune: Annotated[bool, typer.Option(
        help="Delete resources matching -l that the files no longer hold.")] = False,
    selector: Annotated[list[str] | None, typer.Option(
        "-l", "--selector", help="key=value labels choosing what --prune may delete.")] = None,
    control: ControlOpt = _DEFAULT_CONTROL,
    token_file: TokenFileOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Make the control plane hold what the files say (idempotent)."""
    from propylon.controlplane.client import ClientError
    from propylon.controlplane.gitops import parse_selector, plan

    if prune and not selector:
        raise typer.BadParameter("--prune needs a label selector (-l key=value)")
    local = _load_local(file)
    client = _client(control, token_file, ca_file)
    try:
        labels = parse_selector(selector or []) if prune else None
        changes = plan(local, client.list_all(), labels)
        for change in changes:
            if change.action in ("create", "update"):
                assert change.local is not None
                body = json.loads(json.dumps(change.local))
                if change.remote is not None:
                    body["metadata"]["resourceVersion"] = change.remote["metadata"][
                        "resourceVersion"]
                client.put(body)
            elif change.action == "delete":
                assert change.remote is not None
                client.delete(*change.key, change.remote["metadata"]["resourceVersion"])
            verb = {"create": "created", "update": "configured", "delete": "pruned",
                    "unchanged": "unchanged"}[change.action]
            typer.echo(f"{change.ref} {verb}")
    except (ClientError, ValueError) as exc:
        raise _fail(exc) from exc


def diff(
    file: Annotated[list[Path], typer.Option("-f", "--file", help="YAML file or folder.")],
    control: ControlOpt = _DEFAULT_CONTROL,
    token_file: TokenFileOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Show what `apply -f` would change, per Gateway; exit 1 when something would."""
    from propylon.controlplane.client import ClientError
    from propylon.controlplane.diffview import render_diff

    local = _load_local(file)
    client = _client(control, token_file, ca_file)
    try:
        lines, changed = render_diff(local, client.list_all(), client.status())
    except ClientError as exc:
        raise _fail(exc) from exc
    typer.echo("\n".join(lines))
    raise typer.Exit(1 if changed else 0)


def get(
    kind: Annotated[str, typer.Argument(help="gateway, route, routetable, upstream, ...")],
    name: Annotated[str | None, typer.Argument(help="One resource's name.")] = None,
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    output: Annotated[str, typer.Option("-o", "--output", help="table, yaml or json.")] = "",
    control: ControlOpt = _DEFAULT_CONTROL,
    token_file: TokenFileOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """List resources of a kind, or show one (secrets redacted)."""
    import yaml

    from propylon.controlplane.client import ClientError

    client = _client(control, token_file, ca_file)
    try:
        data: Any = (client.get(kind, namespace, name) if name else client.list_kind(kind))
    except ClientError as exc:
        raise _fail(exc) from exc
    fmt = output or ("yaml" if name else "table")
    if fmt == "json":
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    elif fmt == "yaml":
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        rows = [(d["metadata"].get("namespace", "default"), d["metadata"]["name"],
                 d["metadata"].get("resourceVersion", "")) for d in data]
        typer.echo(_table(("NAMESPACE", "NAME", "VERSION"), rows))


def status(
    control: ControlOpt = _DEFAULT_CONTROL,
    token_file: TokenFileOpt = None,
    ca_file: CaFileOpt = None,
    output: Annotated[str, typer.Option("-o", "--output", help="text or json.")] = "text",
) -> None:
    """Fleets (proxies, the IR version each runs, NACKs) and invalid resources."""
    from propylon.controlplane.client import ClientError
    from propylon.controlplane.diffview import render_status

    client = _client(control, token_file, ca_file)
    try:
        data = client.status()
    except ClientError as exc:
        raise _fail(exc) from exc
    if output == "json":
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        typer.echo("\n".join(render_status(data)))


def _load_local(paths: list[Path]) -> Any:
    from propylon.controlplane.gitops import load_local

    local, errors = load_local(paths)
    for error in errors:
        typer.echo(f"error: {error}", err=True)
    if errors:
        raise typer.Exit(1)
    return local


def _table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def register(app: typer.Typer) -> None:
    for command in (control, proxy, apply, diff, get, status):
        app.command()(command)
