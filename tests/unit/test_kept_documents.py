"""A changed file's documents written as they were, at the same line, are the resources its last
load made (``loader._KeptDocuments``): the loader validates, and translation translates, the
documents that changed, not the whole file (an Upstream's endpoint changed in the file of its
Gateway translated every Route again). Whatever the edit, the load is what a fresh load gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from propylon.config import Resource, load_paths
from propylon.config import loader as config_loader
from propylon.standalone import build_snapshot
from tests.support.resources import SHOP_EDGE_YAML

GATEWAY = SHOP_EDGE_YAML.split("---\n")[0]  # the Gateway alone (its Upstream: ``upstream``)


def upstream(port: int, name: str = "app") -> str:
    return f"""apiVersion: propylon.dev/v1
kind: Upstream
metadata: {{name: {name}, namespace: shop}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {port}}}]
"""


def route(name: str, path: str, extra: str = "") -> str:
    return f"""apiVersion: propylon.dev/v1
kind: Route
metadata: {{name: {name}, namespace: shop}}
spec:
  rules:
    - matches: [{{path: {{prefix: {path}}}}}]
      forward: {{backends: [{{upstream: app}}]}}{extra}
"""


KUBECTL_LIST = """apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: {name: api, namespace: shop}
    spec: {ports: [{port: 80}]}
  - apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: shop}
    spec: {ports: [{port: 80}]}
"""


def write(path: Path, *docs: str) -> None:
    path.write_text("---\n".join(docs))


def loaded(folder: Path) -> dict[str, Resource]:
    result = load_paths([folder])
    assert not result.errors, result.errors
    return {r.ref: r for r in result.resources}


def form(folder: Path) -> list[tuple[str, Any, Any]]:
    """A load of ``folder`` as plain data: each resource and where it is."""
    return [(r.ref, r.model_dump(mode="json"), (r.source.line, r.source.column) if r.source
             else None) for r in load_paths([folder]).resources]


def fresh_form(folder: Path) -> list[tuple[str, Any, Any]]:
    config_loader._FILES.files.clear()
    config_loader._FILES.layouts.clear()
    return form(folder)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path / "gateway.yaml", GATEWAY, upstream(9000), route("a", "/a"),
          route("b", "/b"), KUBECTL_LIST, route("c", "/c"))
    return tmp_path


def test_an_upstream_changed_in_its_gateways_file_leaves_the_other_resources_as_they_were(
        folder: Path) -> None:
    before = loaded(folder)
    write(folder / "gateway.yaml", GATEWAY, upstream(9001), route("a", "/a"),
          route("b", "/b"), KUBECTL_LIST, route("c", "/c"))
    after = loaded(folder)
    assert after["Upstream shop/app"] is not before["Upstream shop/app"]
    assert [e.port for e in after["Upstream shop/app"].spec.endpoints] == [9001]  # type: ignore[attr-defined]
    for ref in ("Gateway shop/edge", "Route shop/a", "Route shop/b", "Route shop/c"):
        assert after[ref] is before[ref], ref
    # the items of a list are made again (their lines are not their document's)
    assert after["Service shop/api"] is not before["Service shop/api"]
    assert form(folder) == fresh_form(folder)


@pytest.mark.parametrize("edit", [
    pytest.param(lambda: (GATEWAY, upstream(9000), route("a", "/a", "\n      name: first"),
                          route("b", "/b"), KUBECTL_LIST, route("c", "/c")),
                 id="a-line-added-to-a-document"),
    pytest.param(lambda: (GATEWAY, upstream(9000), route("z", "/z"), route("a", "/a"),
                          route("b", "/b"), KUBECTL_LIST, route("c", "/c")),
                 id="a-document-inserted"),
    pytest.param(lambda: (GATEWAY, route("a", "/a"), route("b", "/b"), KUBECTL_LIST,
                          route("c", "/c")),
                 id="a-document-removed"),
    pytest.param(lambda: (GATEWAY, upstream(9000), route("b", "/a"), route("a", "/b"),
                          KUBECTL_LIST, route("c", "/c")),
                 id="two-documents-swap-names"),
    pytest.param(lambda: ("# a comment\n" + GATEWAY, upstream(9000), route("a", "/a"),
                          route("b", "/b"), KUBECTL_LIST, route("c", "/c")),
                 id="every-line-moved"),
])
def test_any_edit_loads_as_a_fresh_load_does(folder: Path, edit: Any) -> None:
    before = loaded(folder)
    write(folder / "gateway.yaml", *edit())
    after = loaded(folder)
    assert form(folder) == fresh_form(folder)
    # what moved to another line is a new resource: its place is where it is now
    for ref, resource in after.items():
        if ref in before and resource is before[ref]:
            assert resource.source == before[ref].source


def test_a_kept_document_defined_again_elsewhere_is_still_an_error(folder: Path) -> None:
    loaded(folder)
    write(folder / "gateway.yaml", GATEWAY, upstream(9001), route("a", "/a"),
          route("b", "/b"), KUBECTL_LIST, route("c", "/c"))
    write(folder / "other.yaml", route("a", "/elsewhere"))
    errors = load_paths([folder]).errors
    assert any("Route shop/a" in f"{e.kind} {e.name}" and "defined" in e.message
               for e in errors), errors


def test_the_gateway_serves_what_a_fresh_build_gives(folder: Path) -> None:
    first = build_snapshot([folder]).snapshot
    write(folder / "gateway.yaml", GATEWAY, upstream(9001), route("a", "/a"),
          route("b", "/b"), KUBECTL_LIST, route("c", "/c"))
    again = build_snapshot([folder]).snapshot
    config_loader._FILES.files.clear()
    config_loader._FILES.layouts.clear()
    fresh = build_snapshot([folder]).snapshot
    assert first is not None and again is not None and fresh is not None
    assert again.version == fresh.version != first.version
