"""``propylon import --from gloo|apisix|kong|flex|ingress PATH...``: other gateways'
configuration printed as ``propylon.dev/v1`` YAML (``propylon.config.imports``).

The YAML goes to stdout, one document per resource; what could not be mapped goes to stderr
as ``file:line: message`` warnings. Exit 1 when a file cannot be read or parsed."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml

from propylon.cli.params import EXIT_FAILED, Command


class ImportSource(StrEnum):
    gloo = "gloo"
    apisix = "apisix"
    kong = "kong"
    flex = "flex"
    ingress = "ingress"


def import_config(
    source: Annotated[ImportSource, typer.Option(
        "--from", case_sensitive=False, help="The product the files come from.")],
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH", help="Files or folders of that product's configuration.")],
) -> None:
    """Print other gateways' configuration as propylon.dev/v1 YAML; warnings on stderr."""
    from propylon.config.imports import import_paths

    out = import_paths(source.value, paths)
    for message in out.errors:
        typer.echo(f"error: {message}", err=True)
    for message in out.warnings:
        typer.echo(f"warning: {message}", err=True)
    if out.resources:
        typer.echo(yaml.safe_dump_all(out.resources, sort_keys=False), nl=False)
    if out.errors:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("import", cls=Command)(import_config)
