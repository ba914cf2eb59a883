"""Node positions found lazily (``LazyMarks``) equal those recorded while composing, and the
fast scalar resolver gives PyYAML's tags."""

from __future__ import annotations

import pytest
import yaml

from propylon.config import load_text
from propylon.config._yaml import LazyMarks, _index_marks, _Loader, parse_documents


def eager_marks(text: str) -> list[dict[tuple[str | int, ...], tuple[int, int]]]:
    loader = _Loader(text)
    found = []
    try:
        while loader.check_node():
            marks: dict[tuple[str | int, ...], tuple[int, int]] = {}
            _index_marks(loader.get_node(), marks, [], "f.yaml", 10**6)
            found.append(marks)
    finally:
        loader.dispose()
    return found


@pytest.mark.parametrize("text", [
    pytest.param("a: 1\nb: [x, y]\n---\nc: {d: 2}\n", id="two-documents"),
    pytest.param("a: 1\r\nb: [x, y]\r\n---\r\nc: {d: 2}\r\n", id="crlf"),
    pytest.param("--- {a: 1, b: [2, 3]}\n--- {c: 4}\n", id="flow-on-the-marker-line"),
    pytest.param("# c\nname: é€😀\nlist:\n- x: 1\n  y: [a, b]\n# trailing\n---\n# lead\nk: v",
                 id="unicode-comments-no-final-break"),
    pytest.param("  indented: 1\n  other: {a: b}\n...\n---\nz: 1\n", id="indented-end-marker"),
])
def test_lazy_marks_equal_the_eager_ones(text: str) -> None:
    documents, errors = parse_documents(text, "f.yaml")
    assert not errors
    assert all(isinstance(doc.marks, LazyMarks) for doc in documents)
    assert [dict(doc.marks) for doc in documents] == eager_marks(text)


def test_an_error_deep_in_a_later_document_is_located() -> None:
    text = """apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: a, namespace: shop}
spec: {endpoints: [{address: 127.0.0.1, port: 80}]}
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r, namespace: shop}
spec:
  rules:
    - matches: [{path: {prefix: /a}}]
      forward: {backends: [{upstream: a, weight: heavy}]}
"""
    errors = load_text(text, "f.yaml").errors
    assert [(e.line, e.column, e.field) for e in errors] == [
        (12, 42, "spec.rules[0].forward.backends[0].weight")]


@pytest.mark.parametrize("value", [
    "", "yes", "No", "on", "OFF", "true", "~", "null", "1", "010", "0x1F", "1.10", ".inf",
    "-.5", "1_000", "2001-12-14", "<<", "=", "/r1/api", "echo", "5s", "-", "1:20", "1e3",
    ".NaN",
])
@pytest.mark.parametrize("implicit", [(True, False), (False, True)])
def test_the_resolver_gives_pyyamls_tags(value: str, implicit: tuple[bool, bool]) -> None:
    reference = yaml.SafeLoader("")
    assert (_Loader("").resolve(yaml.ScalarNode, value, implicit)
            == reference.resolve(yaml.ScalarNode, value, implicit))
