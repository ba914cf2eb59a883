"""YAML that aliases make endless or huge, and deep nesting: one located error, no crash.
(Found by the config fuzz target; the inputs are also in tests/fuzz/crashes/config/.)"""

from __future__ import annotations

import time

import pytest

from propylon.config import load_text

RESOURCE = "apiVersion: propylon.dev/v1\nkind: Route\nmetadata: {name: x}\nspec:\n"


def alias_bomb(levels: int) -> str:
    text = RESOURCE + "  l0: &l0 [a, a, a, a, a, a, a, a]\n"
    for i in range(1, levels):
        text += f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 8) + "]\n"
    return text


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param("a: &a [*a]\n", 1, "nested deeper than 256 levels", id="recursive-alias"),
        pytest.param(RESOURCE + "  rules: &r [{matches: *r}]\n", 5, "nested deeper",
                     id="recursive-alias-in-resource"),
        pytest.param(alias_bomb(9), 5, "aliases make this document more than", id="alias-bomb"),
        pytest.param("a: " + "[" * 999 + "]" * 999 + "\n", 1, "nested deeper than 256 levels",
                     id="deep-nesting"),
    ],
)
def test_refused_with_one_located_error(text: str, line: int, message: str) -> None:
    start = time.perf_counter()
    result = load_text(text, "t.yaml")
    assert time.perf_counter() - start < 2.0
    assert result.resources == []
    (error,) = result.errors
    assert (error.file, error.line) == ("t.yaml", line)
    assert message in error.message


def test_aliases_within_bounds_still_load() -> None:
    text = RESOURCE + (
        "  rules:\n"
        "    - &rule {matches: [{path: {prefix: /a}}], directResponse: {status: 200}}\n"
        "    - *rule\n"
    )
    result = load_text(text, "t.yaml")
    assert result.errors == [] and len(result.resources) == 1


def test_small_alias_bomb_under_the_bound_loads() -> None:
    result = load_text(alias_bomb(4), "t.yaml")  # 8**4 nodes: allowed, then unknown fields
    assert result.resources == []
    assert all("unknown field" in e.message or "required" in e.message for e in result.errors)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("[a, {", 1, id="no-final-line-break"),
        pytest.param("a: 1\r\rb: [", 3, id="carriage-returns-count-as-line-breaks"),
        pytest.param("a: [\n\n", 3, id="final-line-break"),
    ],
)
def test_syntax_error_at_the_end_is_on_an_existing_line(text: str, line: int) -> None:
    (error,) = load_text(text, "t.yaml").errors
    assert error.line == line


def test_alias_budget_is_shared_by_the_documents_of_a_text() -> None:
    good = RESOURCE.replace("Route", "Upstream") + "  endpoints: [{address: 127.0.0.1, port: 1}]\n"
    text = "---\n".join([alias_bomb(7)] * 30 + [good])
    start = time.perf_counter()
    result = load_text(text, "t.yaml")
    assert time.perf_counter() - start < 2.0
    assert len(result.resources) == 1  # a document without aliases needs no budget
    assert sum("aliases make this document" in e.message for e in result.errors) >= 29
