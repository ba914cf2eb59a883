"""The fast ways of turning YAML into data (the C module ``_libyaml``, ``_plain_data``,
``_PlainWalk``, the resolver's cache of plain scalars' tags) give what PyYAML's constructor
gives with every position recorded: each text below is parsed as the loader does and again
with every document sent down the slow path (``_index_marks`` then ``construct_document``),
and the two must agree on data (types included), lines, columns, positions and errors."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propylon import _extensions
from propylon.config import _yaml
from propylon.config._yaml import MAX_DEPTH, parse_documents

ROOT = Path(__file__).resolve().parents[2]

HANDWRITTEN = {
    "yaml-1.1-scalars": "a: yes\nb: No\nc: on\nd: OFF\ne: 1.10\nf: 010\ng: 0x1F\nh: .inf\n"
                        "i: ~\nj: null\nk:\nl: true\nm: False\nn: 8080\no: 1.5\np: -3\n"
                        "q: 1_000\nr: 2001-12-14\ns: '010'\nt: \"yes\"\nu: 1e3\nv: -.5\n",
    "keys-of-every-kind": "1: a\nyes: b\n~: c\n1.10: d\n'q': e\n\"x\": f\non: g\n",
    "anchors-and-aliases": "a: &x {b: 1, c: [2, 3]}\nd: *x\ne: [*x, *x]\n",
    "scalar-alias": "a: &s text\nb: *s\n",
    "ampersand-in-strings-only": "url: http://h/?a=1&b=2\nre: 'x&y'\nlist: [a&b, c]\n",
    "merge-key": "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n",
    "merge-key-without-anchor": "d:\n  <<: {x: 1}\n  y: 2\n",
    "quoted-merge-key": "d:\n  '<<': 1\n",
    "duplicate-keys": "a: 1\nb:\n  c: 1\n  c: 2\na: 3\n",
    "duplicate-keys-with-anchor": "a: &x 1\nb:\n  c: *x\n  c: 2\n",
    "explicit-tags": "a: !!str 10\nb: !!int '7'\nc: !!float 1\nd: !!bool yes\n",
    "unknown-tag": "a: !thing x\n",
    "set-and-omap": "a: !!set {x, y}\nb: !!omap [{k: v}]\n",
    "complex-key": "? [a, b]\n: c\n",
    "mapping-key": "{a: 1}: 2\n",
    "several-documents": "a: 1\n---\n---\n# only a comment\n---\nb: [x, {c: d}]\n...\n",
    "scalar-documents": "--- text\n--- 12\n--- ~\n--- yes\n--- [a]\n",
    "block-scalars": "a: |\n  one\n  two\nb: >\n  folded\n  text\nc: |-\n  010\n",
    "flow-everything": "{a: [1, {b: 2}], c: {d: [], e: {}}}\n",
    "empty-values": "a:\nb: []\nc: {}\nd: ''\n",
    "unicode": "name: é€😀\nlist:\n- x: 1\n  y: [a, b]\n",
    "crlf": "a: 1\r\nb: [x, y]\r\n---\r\nc: {d: 2}\r\n",
    "syntax-error": "a: [1, 2\nb: 3\n",
    "syntax-error-after-a-document": "a: 1\n---\nb: {c: [\n",
    "tab-indentation": "a:\n\tb: 1\n",
    "undefined-alias": "a: *nothing\n",
    "duplicate-anchor": "a: &x 1\nb: &x 2\n",
    "recursive-alias": "a: &a [*a]\n",
    "yaml-directive": "%YAML 1.1\n---\na: yes\n",
    "tag-directive": "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n",
    "non-specific-tag": "a: ! yes\nb: ! [1]\n",
    "byte-order-mark": "\ufeffa: 1\nb: [x]\n",
    "non-ascii-first-characters": "é: ñ1\n€: 1.5x\n",
    "document-end-markers": "a: 1\n...\n---\nb: 2\n...\n",
    "comments-only": "# nothing\n# here\n",
    "empty": "",
    "long-string": "a: " + "x" * 100_000 + "\n",
    "null-byte": "a: b\x00c\n",
    "sexagesimal-and-timestamps": "a: 190:20:30\nb: 2001-12-14t21:59:43.10-05:00\nc: 1_0\n",
}


def _nested(depth: int, leaf: str) -> str:
    """A document whose ``leaf`` is ``depth`` levels down (the root mapping is level 0)."""
    return "a: " + "[" * (depth - 1) + leaf + "]" * (depth - 1) + "\n"


for _depth in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1):
    HANDWRITTEN[f"scalar-at-depth-{_depth}"] = _nested(_depth, "x")
    HANDWRITTEN[f"empty-list-at-depth-{_depth}"] = _nested(_depth, "[]")
    HANDWRITTEN[f"empty-map-at-depth-{_depth}"] = _nested(_depth, "{}")


def _files() -> dict[str, str]:
    texts = {}
    for pattern in ("examples/**/*.yaml", "bench/*.yaml", "tests/golden/cases/*.yaml",
                    "tests/fuzz/crashes/config/*"):
        for path in sorted(ROOT.glob(pattern)):
            texts[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8",
                                                                 errors="replace")
    return texts


FILES = _files()


def _cut(texts: dict[str, str]) -> dict[str, str]:
    """Each text cut short at a few places: partial documents and syntax errors."""
    cut = {}
    for name, text in texts.items():
        for fraction in (3, 5, 7):
            cut[f"{name}[:{len(text) * 2 // fraction}]"] = text[:len(text) * 2 // fraction]
    return cut


CASES = {**HANDWRITTEN, **FILES, **_cut(HANDWRITTEN), **_cut(FILES)}


def _typed(value: Any) -> Any:
    """``value`` with the type of every scalar spelled out (``1``, ``True`` and ``1.0`` are
    equal in Python)."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(item) for item in value])
    return (type(value).__name__, repr(value))


def _parsed(text: str) -> tuple[list[Any], list[str]]:
    documents, errors = parse_documents(text, "f.yaml")
    return ([(_typed(doc.data), doc.line, doc.column, dict(doc.marks)) for doc in documents],
            [str(error) for error in errors])


def _slow_path(node: Any, depth: int = 0) -> Any:
    raise _yaml._NotPlain


@pytest.mark.parametrize("slow", ["python-walk", "constructor"])
@pytest.mark.parametrize("text", list(CASES.values()), ids=list(CASES))
def test_fast_paths_give_what_the_slower_ones_give(
    text: str, slow: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against the Python walk without the C module, and against PyYAML's constructor with
    every position recorded (neither fast path)."""
    fast = _parsed(text)
    monkeypatch.setattr(_yaml, "_libyaml", None)
    if slow == "constructor":
        monkeypatch.setattr(_yaml, "_plain_data", _slow_path)
        monkeypatch.setattr(_yaml._PlainWalk, "data", lambda self, node, depth: _slow_path(node))
    assert fast == _parsed(text)


def test_the_c_module_is_built_and_takes_plain_texts() -> None:
    """The compiled build has it (the pure-Python run does without, by design); it answers
    None, leaving the text to the Python path, for anything but plain data."""
    if _extensions.disabled_by_environment():
        assert _yaml._libyaml is None
        return
    assert _yaml._libyaml is not None
    built = _yaml._libyaml.load("a: 1\nb: [yes, '2', 1.10]\n---\nc: {d: ~}\n")
    assert built == [({"a": 1, "b": ["yes", "2", "1.10"]}, 0, 0, 2, 0),
                     ({"c": {"d": None}}, 3, 0, 4, 0)]
    for name in ("anchors-and-aliases", "merge-key-without-anchor", "duplicate-keys",
                 "explicit-tags", "complex-key", "syntax-error", "yaml-directive",
                 f"scalar-at-depth-{MAX_DEPTH + 1}"):
        assert _yaml._libyaml.load(HANDWRITTEN[name]) is None, name
    assert _yaml._libyaml.load("a: \udc80\n") is None  # not UTF-8: PyYAML refuses it


_PIECES = ["a", "b: ", "- ", "\n", "  ", "[", "]", "{", "}", ", ", ": ", "'", '"', "&x ",
           "*x", "!!str ", "? ", "<<: ", "|\n", ">-\n", "---\n", "...\n", "#", "yes", "010",
           "1.10", "~", "\t", "é", "\r\n", "%YAML 1.1\n", "-1", ".inf", "2001-12-14"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_any_text_gets_the_same_answer_with_and_without_the_c_module(pieces: list[str]) -> None:
    text = "".join(pieces)
    fast = _parsed(text)
    saved, _yaml._libyaml = _yaml._libyaml, None
    try:
        assert fast == _parsed(text)
    finally:
        _yaml._libyaml = saved


def test_the_cases_take_every_path() -> None:
    assert len(FILES) >= 20
    assert any("&" not in text for text in CASES.values())
    assert any("&" in text and "*" in text for text in CASES.values())


@pytest.mark.parametrize("value", ["yes", "010", "1.10", "8080", "true", "~", "name", ""])
def test_the_resolvers_cache_gives_the_tag_again(value: str) -> None:
    loader = _yaml._Loader("")
    try:
        first = loader.resolve(_yaml._ScalarNode, value, (True, False))
        assert _yaml._PLAIN_TAGS.get(value) == first
        assert loader.resolve(_yaml._ScalarNode, value, (True, False)) == first
        assert loader.resolve(_yaml._ScalarNode, value, (False, True)) == _yaml._STR
    finally:
        loader.dispose()


def test_the_resolvers_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_yaml, "_PLAIN_TAGS", {})
    loader = _yaml._Loader("")
    try:
        for number in range(_yaml._PLAIN_TAGS_MAX * 2 + 10):
            loader.resolve(_yaml._ScalarNode, f"v{number}", (True, False))
        loader.resolve(_yaml._ScalarNode, "x" * (_yaml._PLAIN_TEXT_MAX + 1), (True, False))
    finally:
        loader.dispose()
    assert 0 < len(_yaml._PLAIN_TAGS) <= _yaml._PLAIN_TAGS_MAX
    assert "x" * (_yaml._PLAIN_TEXT_MAX + 1) not in _yaml._PLAIN_TAGS


@pytest.mark.parametrize("name", ["yaml-1.1-scalars", "anchors-and-aliases", "merge-key",
                                  "flow-everything", "duplicate-keys", "syntax-error"])
def test_parsing_leaves_no_cyclic_garbage(name: str) -> None:
    """Loading runs with the cyclic collector paused and then freezes what is left
    (``runtime/gc_pause.py``): a reference cycle made while parsing would never be freed."""
    gc.collect()
    gc.disable()
    try:
        parse_documents(HANDWRITTEN[name] + "---\n" + HANDWRITTEN["unicode"], "f.yaml")
        assert gc.collect() == 0
    finally:
        gc.enable()
