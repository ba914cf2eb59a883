"""A file with an error that names no resource (a YAML syntax error, a document of no known
kind) is read as it last loaded by the gateway's builds (``load_paths(keep_last_loaded=True)``,
``standalone.build_snapshot``): one team's broken file neither takes its own routes away nor
holds back the other files' changes (issue #15, "one team's mistake contained")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from propylon.config import load_paths
from propylon.standalone import build_snapshot

GATEWAY = """apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: gw}
spec:
  listeners: [{name: web, port: 8080}]
  routeSelector: {namespaces: ["*"]}
"""


def route(name: str, *paths: str, **extra: Any) -> str:
    rules = [{"matches": [{"path": {"prefix": p}}], "directResponse": {"status": 200},
              **extra} for p in paths]
    return yaml.safe_dump({"apiVersion": "propylon.dev/v1", "kind": "Route",
                           "metadata": {"name": name, "namespace": "team"},
                           "spec": {"rules": rules}}, sort_keys=False)


SYNTAX_ERROR = "apiVersion: propylon.dev/v1\nkind: Route\nmetadata: {name: a\n"
UNKNOWN_KIND = "---\napiVersion: propylon.dev/v1\nkind: Rout\nmetadata: {name: z}\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "0-gateway.yaml").write_text(GATEWAY)
    (tmp_path / "team-a.yaml").write_text(route("a", "/a"))
    (tmp_path / "team-b.yaml").write_text(route("b", "/b"))
    return tmp_path


def paths_of(folder: Path, keep: bool = True) -> dict[str, list[str]]:
    loaded = load_paths([folder], keep_last_loaded=keep)
    assert not loaded.errors, loaded.errors
    return {r.name: [rule.matches[0].path.prefix for rule in r.spec.rules]
            for r in loaded.resources if r.kind == "Route"}


@pytest.mark.parametrize("broken", [
    pytest.param(lambda: SYNTAX_ERROR, id="yaml-syntax-error"),
    pytest.param(lambda: route("a", "/a", "/a2") + UNKNOWN_KIND, id="unknown-kind"),
])
def test_a_broken_file_is_read_as_it_last_loaded_and_the_others_as_written(
        folder: Path, broken: Any) -> None:
    assert paths_of(folder) == {"a": ["/a"], "b": ["/b"]}
    (folder / "team-a.yaml").write_text(broken())
    (folder / "team-b.yaml").write_text(route("b", "/b", "/b2"))
    loaded = load_paths([folder], keep_last_loaded=True)
    assert not loaded.errors
    assert {r.name: [rule.matches[0].path.prefix for rule in r.spec.rules]
            for r in loaded.resources if r.kind == "Route"} == {"a": ["/a"], "b": ["/b", "/b2"]}
    (error,) = loaded.kept_back
    assert error.file == str(folder / "team-a.yaml") and error.line is not None
    # still broken: still its last loaded version; mended: read as written again
    assert paths_of(folder) == {"a": ["/a"], "b": ["/b", "/b2"]}
    (folder / "team-a.yaml").write_text(route("a", "/a", "/a3"))
    assert paths_of(folder) == {"a": ["/a", "/a3"], "b": ["/b", "/b2"]}


def test_a_file_that_never_loaded_is_an_error(folder: Path) -> None:
    (folder / "team-c.yaml").write_text(SYNTAX_ERROR)
    loaded = load_paths([folder], keep_last_loaded=True)
    assert [e.file for e in loaded.errors] == [str(folder / "team-c.yaml")]
    assert not loaded.kept_back


def test_only_the_gateways_builds_keep_a_last_loaded_version(folder: Path) -> None:
    paths_of(folder)
    (folder / "team-a.yaml").write_text(SYNTAX_ERROR)
    loaded = load_paths([folder])  # validate, explain: the files as written
    assert [e.file for e in loaded.errors] == [str(folder / "team-a.yaml")]
    assert not loaded.kept_back and "a" not in {r.name for r in loaded.resources}


def test_a_last_loaded_version_with_an_invalid_resource_keeps_it_contained(
        folder: Path) -> None:
    bad = yaml.safe_dump({"apiVersion": "propylon.dev/v1", "kind": "Route",
                          "metadata": {"name": "bad", "namespace": "team"},
                          "spec": {"rules": [{"bogus": 1}]}})
    (folder / "team-a.yaml").write_text(route("a", "/a") + "---\n" + bad)
    first = load_paths([folder], keep_last_loaded=True)
    assert [r.key for r in first.rejected] == ["team/bad"] and not first.kept_back
    (folder / "team-a.yaml").write_text(SYNTAX_ERROR)
    loaded = load_paths([folder], keep_last_loaded=True)
    assert [r.key for r in loaded.rejected] == ["team/bad"]
    assert {r.name for r in loaded.resources if r.kind == "Route"} == {"a", "b"}
    assert loaded.kept_back and all(e.file.endswith("team-a.yaml") for e in loaded.kept_back)


def test_definitions_of_the_text_left_out_do_not_count(folder: Path) -> None:
    """The broken text defined Route a before its error: its last loaded version defines it
    again without being "defined twice"."""
    paths_of(folder)
    (folder / "team-a.yaml").write_text(route("a", "/a") + "---\n" + SYNTAX_ERROR)
    assert paths_of(folder) == {"a": ["/a"], "b": ["/b"]}


def test_the_build_serves_the_rest_and_says_which_file_is_kept_back(folder: Path) -> None:
    assert build_snapshot([folder]).snapshot is not None
    (folder / "team-a.yaml").write_text(SYNTAX_ERROR)
    (folder / "team-b.yaml").write_text(route("b", "/b", "/b2"))
    result = build_snapshot([folder])
    assert result.snapshot is not None and not result.errors
    served = {rule.matches[0].path.value for rule in result.snapshot.gateways[0].rules}
    assert served == {"/a", "/b", "/b2"}
    (kept,) = result.kept_back
    assert kept.startswith(f"{folder / 'team-a.yaml'}:4:1: invalid YAML: ")
    assert kept.endswith("(the file is served as it was last loaded)")
    assert result.warnings[0] == kept


def test_texts_changed_says_whether_the_files_are_what_the_last_load_read(
        folder: Path) -> None:
    from propylon.config.loader import texts_changed

    load_paths([folder], keep_last_loaded=True)
    assert not texts_changed([folder])
    (folder / "team-b.yaml").write_text(route("b", "/b", "/b2"))
    assert texts_changed([folder])
    load_paths([folder], keep_last_loaded=True)
    assert not texts_changed([folder])
    (folder / "team-c.yaml").write_text(route("c", "/c"))
    assert texts_changed([folder])
    (folder / "team-c.yaml").unlink()
    assert not texts_changed([folder])
    (folder / "team-a.yaml").unlink()
    assert texts_changed([folder])
