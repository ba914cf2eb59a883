"""Connected-mode commands: ``control``, ``proxy``, and the GitOps client (``apply``,
``diff``, ``get``, ``status``). Thin wrappers over ``propylon.controlplane``."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec

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
    GetFormat,
    LogFormat,
    LogFormatOpt,
    LogLevel,
    LogLevelOpt,
    StatusFormat,
    WorkersOpt,
    configure_logging,
    failure,
    usage_error,
)

ControlOpt = Annotated[str, typer.Option(
    "--control", envvar="PROPYLON_CONTROL", metavar="URL", help="Control plane URL.")]
TokenFileOpt = Annotated[Path | None, typer.Option(
    "--token-file", metavar="FILE", help="File holding the bearer token (else "
                                         "$PROPYLON_TOKEN, else ~/.config/propylon/token).")]
CaFileOpt = Annotated[Path | None, typer.Option(
    "--ca-file", metavar="FILE", help="CA certificate to trust for an https control plane.")]
FilesOpt = Annotated[list[Path], typer.Option(
    "-f", "--file", metavar="PATH", help="YAML file or folder (repeatable).")]
_DEFAULT_CONTROL = "http://127.0.0.1:9000"


@functools.cache
def _kinds() -> tuple[dict[str, str], dict[str, str]]:
    """The kinds a path names, and their plurals; looked up when a command needs them (the
    resource models are not imported to parse a command line)."""
    from propylon.controlplane.resources import KIND_OF_PATH

    plurals = {
        ("policies" if kind == "policy" else f"{kind}es" if kind.endswith("s") else f"{kind}s"):
        kind for kind in KIND_OF_PATH}
    return KIND_OF_PATH, plurals


def _token(token_file: Path | None) -> str:
    """The bearer token; none is a usage error (exit 2), the same for every command."""
    from propylon.controlplane.client import resolve_token

    try:
        return resolve_token(token_file)
    except (OSError, ValueError) as exc:
        raise usage_error(f"no token: {exc}") from exc


def _client(control: str, token_file: Path | None, ca_file: Path | None = None) -> Any:
    from propylon.controlplane.client import Client

    return Client(control, _token(token_file), ca_file=ca_file)


def control(
    listen: Annotated[str, typer.Option(
        metavar="HOST:PORT", help="Where the REST API listens.")] = "127.0.0.1:9000",
    store: Annotated[str, typer.Option(
        metavar="URL", help="sqlite:///PATH (embedded) or etcd://HOST:PORT.")
    ] = "sqlite:///propylon.db",
    token_file: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Bearer token file (created 0600 if missing).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Serve HTTPS with this certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Private key of --tls-cert.")] = None,
    external_plugin: Annotated[list[str] | None, typer.Option(
        metavar="NAME", help="A plugin the proxies have and this process does not: its "
                             "sections are passed on unchecked (repeatable; docs/plugins.md).")
    ] = None,
    log_level: LogLevelOpt = LogLevel.info,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Run the control plane: store, translation, REST API and distribution to proxies."""
    import uvloop

    from propylon.cli.main import parse_hostport
    from propylon.controlplane.server import run_control, tls_context
    from propylon.controlplane.token import DEFAULT_TOKEN_FILE
    from propylon.policies.plugins import allow_external

    configure_logging(log_level, log_format)
    allow_external(external_plugin or ())
    address = parse_hostport(listen)
    if address is None:
        raise typer.BadParameter("--listen cannot be off")
    tls = tls_context(tls_cert, tls_key)
    code = uvloop.run(run_control(*address, store, token_file or DEFAULT_TOKEN_FILE, tls,
                                  explainer=_explain_lines))
    raise typer.Exit(code)


def _explain_lines(snapshot: Any, method: str, url: str, headers: dict[str, str],
                   listener: str | None) -> list[str]:
    """The dashboard's explain: ``propylon explain`` over the control plane's IR (wired here,
    since the control plane's own modules do not load the proxy's code)."""
    from propylon.explain import explain

    return explain(snapshot, method, url, headers, listener=listener).lines


def proxy(
    control: ControlOpt = _DEFAULT_CONTROL,
    gateway: Annotated[str, typer.Option(
        metavar="NAMESPACE/NAME", help="The Gateway to serve.")] = "",
    token_file: TokenFileOpt = None,
    cache_dir: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Where the last good IR is kept (default ~/.cache/propylon).")
    ] = None,
    ca_file: CaFileOpt = None,
    workers: WorkersOpt = 1,
    admin: AdminOpt = "127.0.0.1:9901",
    access_log: AccessLogOpt = "stdout",
    drain_timeout: DrainTimeoutOpt = 30.0,
    log_level: LogLevelOpt = LogLevel.info,
    log_format: LogFormatOpt = LogFormat.text,
    access_log_format: AccessLogFormatOpt = AccessLogFormat.json,
    health_interval: Annotated[float, typer.Option(
        min=0.1, max=300.0, metavar="SECONDS",
        help="How often the proxy reports its health and its requests and 5xx answers per "
             "IR version (what progressive rollouts judge).")] = 5.0,
) -> None:
    """Run a proxy whose configuration comes from the control plane."""
    import ssl

    import uvloop

    from propylon.cli.main import parse_hostport
    from propylon.proxy.agent import Agent
    from propylon.proxy.ir_cache import DEFAULT_CACHE_DIR, IRCache
    from propylon.proxy.supervisor import Supervisor, run_supervisor

    configure_logging(log_level, log_format)
    if gateway.count("/") != 1:
        raise typer.BadParameter("--gateway must be NAMESPACE/NAME")
    token = _token(token_file)
    agent = Agent(
        control=control.rstrip("/"), gateway=gateway, token=token,
        cache=IRCache(cache_dir or DEFAULT_CACHE_DIR, gateway),
        ssl_context=ssl.create_default_context(cafile=ca_file) if ca_file else None,
        health_interval=health_interval,
    )
    supervisor = Supervisor(workers=workers, access_log=access_log, log_level=log_level.value,
                            log_format=log_format.value,
                            access_log_format=access_log_format.value,
                            drain_timeout=drain_timeout)
    code = uvloop.run(run_supervisor(supervisor, parse_hostport(admin), start=agent.start,
                                     background=[agent.run, agent.report_health]))
    raise typer.Exit(code)


PruneOpt = Annotated[bool, typer.Option(
    help="Delete resources matching -l that the files no longer hold (needs -l).")]
SelectorOpt = Annotated[list[str] | None, typer.Option(
    "-l", "--selector", metavar="SELECTOR",
    help="Labels, as kubectl -l writes them (team=shop,tier!=web,env in (a,b),owner): only "
         "resources matching them are applied, and --prune deletes only those (repeatable: "
         "all must hold).")]
P = ParamSpec("P")
_VERB = {"create": "created", "update": "configured", "delete": "pruned",
         "unchanged": "unchanged"}


def _one_shot(command: Callable[P, None]) -> Callable[P, None]:
    """A command that reads a whole configuration: the cyclic collector paused while it runs
    (``gc_pause.py``; for 10,000 Routes, most of what ``diff`` took was collections)."""
    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        from propylon.runtime.gc_pause import gc_paused

        with gc_paused():
            command(*args, **kwargs)

    return run


@_one_shot
def apply(
    file: FilesOpt,
    prune: PruneOpt = False,
    selector: SelectorOpt = None,
    control: ControlOpt = _DEFAULT_CONTROL,
    token_file: TokenFileOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Make the control plane hold what the files say, in one transaction (idempotent)."""
    from propylon.controlplane.client import ClientError

    local, labels = _selected_local(file, prune, selector)
    client = _client(control, token_file, ca_file)
    try:
        answer = client.apply([item.data for item in local],
                              labels.to_json() if prune and labels else None)
    except ClientError as exc:
        raise failure(exc) from exc
    for change in answer["changes"]:
        typer.echo(f"{change['kind']} {change['namespace']}/{change['name']} "
                   f"{_VERB[change['action']]}")
    if answer.get("revision"):
        typer.echo(f"applied as revision {answer['revision']}")


@_one_shot
def diff(
    file: FilesOpt,
    prune: PruneOpt = False,
    selector: SelectorOpt = None,
    control: ControlOpt = _DEFAULT_CONTROL,
    token_file: TokenFileOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Show the plan `apply -f` (same options) would carry out, per Gateway; exit 3 when
    something would change."""
    from propylon.controlplane.client import ClientError
    from propylon.controlplane.diffview import render_diff
    from propylon.controlplane.gitops import changes_of

    local, labels = _selected_local(file, prune, selector)
    client = _client(control, token_file, ca_file)
    try:
        answer = client.apply([item.data for item in local],
                              labels.to_json() if prune and labels else None, dry_run=True)
        # what is stored and served matters only to show changes (10,000 Routes: seconds)
        changing = any(change["action"] != "unchanged" for change in answer["changes"])
        remote = client.list_all() if changing else []
        lines, changed = render_diff(changes_of(answer, local, remote), local, remote,
                                     client.status() if changing else {})
    except ClientError as exc:
        raise failure(exc) from exc
    typer.echo("\n".join(lines))
    raise typer.Exit(EXIT_NEGATIVE if changed else EXIT_OK)


def _selected_local(paths: list[Path], prune: bool, selector: list[str] | None) -> Any:
    """The files' resources that ``-l`` keeps (kubectl's rule), and the selector."""
    from propylon.controlplane.gitops import select_local
    from propylon.controlplane.selector import parse_selector

    if prune and not selector:
        raise typer.BadParameter("--prune needs a label selector (-l key=value)")
    try:
        labels = parse_selector(",".join(selector)) if selector else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="-l") from exc
    if prune and labels is not None and not labels.bounded:
        raise typer.BadParameter("--prune needs -l to require a label (key=value, key in "
                                 "(...) or key), so that it cannot select everything")
    local, left_out = select_local(_load_local(paths), labels)
    for kind, namespace, name in left_out:
        typer.echo(f"{kind} {namespace}/{name} skipped: its labels do not match -l", err=True)
    return local, labels


def get(
    kind: Annotated[str, typer.Argument(
        metavar="KIND", autocompletion=lambda: sorted(_kinds()[0]),
        help="gateway, route, routetable, upstream, policy or consumer; plurals too.")],
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", help="One resource's name; without it, list the kind.")] = None,
    namespace: Annotated[str | None, typer.Option(
        "-n", "--namespace", metavar="NAMESPACE",
        help="NAME's namespace (default: default); when listing, list only this one "
             "(default: every namespace).")] = None,
    output: Annotated[GetFormat | None, typer.Option(
        "-o", "--output", case_sensitive=False,
        help="Default: table for a list, yaml for one resource.")] = None,
    control: ControlOpt = _DEFAULT_CONTROL,
    token_file: TokenFileOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """List resources of a kind, or show one (secrets redacted)."""
    from propylon.controlplane.client import ClientError

    path_kind = _path_kind(kind)
    client = _client(control, token_file, ca_file)
    try:
        if name:
            data: Any = client.get(path_kind, namespace or "default", name)
        else:
            data = [item for item in client.list_kind(path_kind)
                    if namespace is None or _namespace_of(item) == namespace]
    except ClientError as exc:
        raise failure(exc) from exc
    fmt = output or (GetFormat.yaml if name else GetFormat.table)
    if fmt is GetFormat.table:
        items = data if isinstance(data, list) else [data]
        rows = [(_namespace_of(d), d["metadata"]["name"],
                 d["metadata"].get("resourceVersion", "")) for d in items]
        typer.echo(_table(("NAMESPACE", "NAME", "VERSION"), rows))
    else:
        typer.echo(_dump(data, fmt))


def _path_kind(kind: str) -> str:
    """The API's name for ``kind`` (``route``), given as ``Route``, ``route`` or ``routes``."""
    lower = kind.lower()
    kind_of_path, plurals = _kinds()
    path_kind = plurals.get(lower, lower)
    if path_kind not in kind_of_path:
        raise typer.BadParameter(
            f"unknown kind {kind!r}; one of {', '.join(kind_of_path)}", param_hint="KIND")
    return path_kind


def _namespace_of(item: dict[str, Any]) -> str:
    return str(item["metadata"].get("namespace", "default"))


def status(
    control: ControlOpt = _DEFAULT_CONTROL,
    token_file: TokenFileOpt = None,
    ca_file: CaFileOpt = None,
    output: Annotated[StatusFormat, typer.Option(
        "-o", "--output", case_sensitive=False, help="Output format.")] = StatusFormat.text,
) -> None:
    """Fleets (proxies, the IR version each runs, NACKs) and invalid resources."""
    from propylon.controlplane.client import ClientError
    from propylon.controlplane.diffview import render_status

    client = _client(control, token_file, ca_file)
    try:
        data = client.status()
    except ClientError as exc:
        raise failure(exc) from exc
    if output is StatusFormat.text:
        typer.echo("\n".join(render_status(data)))
    else:
        typer.echo(_dump(data, output))


class RolloutAction(StrEnum):
    pause = "pause"
    resume = "resume"
    abort = "abort"


def rollout(
    action: Annotated[RolloutAction, typer.Argument(
        case_sensitive=False, help="pause (stop widening; judging goes on), resume (the "
                                   "step's interval starts again), abort (every proxy back "
                                   "to the previous version).")],
    gateway: Annotated[str, typer.Argument(metavar="NAMESPACE/NAME", help="The Gateway.")],
    control: ControlOpt = _DEFAULT_CONTROL,
    token_file: TokenFileOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Pause, resume or abort a Gateway's progressive rollout (Gateway.spec.rollout)."""
    from propylon.controlplane.client import ClientError
    from propylon.controlplane.diffview import render_rollout

    if gateway.count("/") != 1:
        raise typer.BadParameter("must be NAMESPACE/NAME", param_hint="GATEWAY")
    client = _client(control, token_file, ca_file)
    try:
        data = client.rollout(gateway, action.value)
    except ClientError as exc:
        raise failure(exc) from exc
    typer.echo("\n".join(line.strip() for line in render_rollout(data)))


def _dump(data: Any, fmt: str) -> str:
    import yaml

    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True)
    return yaml.safe_dump(data, sort_keys=False).rstrip()


def _load_local(paths: list[Path]) -> Any:
    from propylon.controlplane.gitops import load_local

    local, errors = load_local(paths)
    for error in errors:
        typer.echo(error, err=True)  # file:line: message, as validate prints it
    if errors:
        raise typer.Exit(EXIT_FAILED)
    return local


def _table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def register(app: typer.Typer) -> None:
    for command in (control, proxy, apply, diff, get, status, rollout):
        app.command(cls=Command)(command)
