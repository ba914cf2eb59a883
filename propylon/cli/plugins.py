"""``propylon plugins``: the plugins installed in this environment and what they declare.

Per plugin: its name (the policy type), the package and version that declare it, its class,
its place in the order, the filter phases it implements and its body declarations. Body
declarations are per filter instance (a cap may come from the config): they are shown for a
filter built with the default config, or as ``needs config`` when the config has required
fields. A plugin that cannot be used is listed with the reason, and the command exits 1.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from propylon.cli.params import EXIT_FAILED, Command

if TYPE_CHECKING:  # imported by the command itself: parsing any command line stays quick
    from propylon.filters.base import Filter
    from propylon.policies.plugins import Plugin

_BODY_PHASES = (("request", "on_request_body", "request_body_buffer"),
                ("response", "on_response_body", "response_body_buffer"))


class PluginsFormat(StrEnum):
    text = "text"
    json = "json"


def plugins(
    output: Annotated[PluginsFormat, typer.Option(
        "-o", "--output", case_sensitive=False,
        help="text: a table, broken plugins after it; json: one document.")
    ] = PluginsFormat.text,
) -> None:
    """List the plugins installed here (entry points of group propylon.filters)."""
    from propylon.policies.plugins import ENTRY_POINT_GROUP, installed_plugins

    found = installed_plugins().plugins
    described = [describe(plugin) for plugin in found]
    if output is PluginsFormat.json:
        typer.echo(json.dumps({"plugins": described}, indent=2))
    elif not found:
        typer.echo(f"no plugins installed (entry point group {ENTRY_POINT_GROUP})")
    else:
        print_table(described)
    if any(plugin.error is not None for plugin in found):
        raise typer.Exit(EXIT_FAILED)


def describe(plugin: Plugin) -> dict[str, Any]:
    """One plugin as ``-o json`` shows it."""
    from propylon.filters.base import Filter

    row, cls = plugin.row, plugin.cls
    usable = row is not None and isinstance(cls, type) and issubclass(cls, Filter)
    return {
        "name": plugin.name,
        "package": plugin.package,
        "version": plugin.version,
        "class": plugin.target,
        "placement": {"where": row.placement, "phase": row.phase} if row is not None else None,
        "phases": implemented_phases(cls) if usable and cls is not None else [],
        "body": body_declarations(cls) if usable and cls is not None else None,
        "error": plugin.error,
    }


def implemented_phases(cls: type[Filter]) -> list[str]:
    from propylon.filters.base import PHASES, Filter

    return [phase for phase in PHASES if getattr(cls, phase) is not getattr(Filter, phase)]


def body_declarations(cls: type[Filter]) -> dict[str, Any] | None:
    """The body declarations of a filter built with the default config, for the body phases
    the class implements; None when it has none; ``{"needsConfig": true}`` when the default
    config does not validate or the filter cannot be built from it here."""
    from propylon.filters.base import Filter, FilterEnv

    phases = [(side, attribute) for side, phase, attribute in _BODY_PHASES
              if getattr(cls, phase) is not getattr(Filter, phase)]
    if not phases:
        return None
    try:
        settings = cls.settings_model.model_validate({})
        built = cls.from_spec(settings, "propylon plugins", FilterEnv(None))
    except Exception:  # required fields, or a filter that needs a running worker
        return {"needsConfig": True}
    body: dict[str, Any] = {side: {"wholeBody": getattr(built, attribute)}
                            for side, attribute in phases}
    body["inspectOnly"] = built.body_inspect_only
    return body


def body_text(body: dict[str, Any] | None) -> str:
    if body is None:
        return "-"
    if body.get("needsConfig"):
        return "needs config"
    parts = []
    for side in ("request", "response"):
        if side in body:
            cap = body[side]["wholeBody"]
            parts.append(f"{side}: whole body, at most {cap} bytes" if cap
                         else f"{side}: streamed")
    if body["inspectOnly"]:
        parts.append("inspect only")
    return "; ".join(parts)


def print_table(described: list[dict[str, Any]]) -> None:
    from propylon.cli.control import _table

    header = ("NAME", "PACKAGE", "CLASS", "PLACE", "PHASES", "BODY (default config)")
    rows = [(d["name"], f"{d['package']} {d['version']}".strip(), d["class"],
             f"{d['placement']['where']} {d['placement']['phase']}" if d["placement"] else "-",
             ",".join(p.removeprefix("on_") for p in d["phases"]) or "-",
             body_text(d["body"]))
            for d in described if d["error"] is None]
    if rows:
        typer.echo(_table(header, rows))
    for d in described:
        if d["error"] is not None:
            typer.echo(f"{d['name']} ({d['package']} {d['version']}, {d['class']}): "
                       f"cannot be used: {d['error']}", err=True)


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(plugins)
