"""``apply -f`` / ``diff -f``'s reading of the files (``controlplane.gitops.load_local``):
each file parsed once, each document's data with the resource validated from it, and every
error ``load_paths`` would give (``validate`` prints the same)."""

from __future__ import annotations

from pathlib import Path

from propylon.config import load_paths
from propylon.controlplane.gitops import load_local

_ROUTE = """\
apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: {name}{namespace}}}
spec:
  rules:
    - matches: [{{path: {{prefix: /{name}}}}}]
      directResponse: {{status: 200, body: {body}}}
"""


def _route(name: str, body: str = "ok", namespace: str = "") -> str:
    return _ROUTE.format(name=name, body=body,
                         namespace=f", namespace: {namespace}" if namespace else "")


def test_each_document_comes_with_its_data_and_its_resource(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(_route("one", body="yes") + "---\n"
                                     + _route("two", namespace="shop"))
    (tmp_path / "b.yaml").write_text(_route("three", body="1.10"))
    local, errors = load_local([tmp_path])
    assert errors == []
    assert [item.key for item in local] == [
        ("Route", "default", "one"), ("Route", "shop", "two"), ("Route", "default", "three")]
    first, _, third = local
    # YAML 1.1 scalars stay the strings written, in the data sent and in the model
    assert first.data["spec"]["rules"][0]["directResponse"]["body"] == "yes"
    assert third.data["spec"]["rules"][0]["directResponse"]["body"] == "1.10"
    assert first.data["metadata"]["namespace"] == "default"  # filled in for the API
    assert [item.model.key for item in local] == ["default/one", "shop/two", "default/three"]
    assert third.model.source is not None and third.model.source.file.endswith("b.yaml")


def test_the_errors_are_those_of_load_paths(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(_route("one"))
    (tmp_path / "b.yaml").write_text(_route("one") + "---\n" + _route("bad").replace(
        "directResponse", "bogusAction"))
    missing = tmp_path / "missing.yaml"
    local, errors = load_local([tmp_path, missing])
    expected = [str(e) for e in load_paths([tmp_path, missing]).errors]
    assert local == [] and errors == expected
    assert any("defined twice" in e and "b.yaml:1" in e for e in errors)
    assert any("b.yaml:" in e and "bogusAction" in e for e in errors)
    assert any("missing.yaml" in e for e in errors)
