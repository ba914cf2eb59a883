"""The importers' regex reading (``config/imports/common.py``): one tokenizer serves
``python_regex`` (PCRE / Rust syntax to Python's) and ``has_top_level_alternation``."""

from __future__ import annotations

import pytest

from propylon.config.imports.common import (
    CHAR,
    CLASS,
    CLOSE,
    ESCAPE,
    OPEN,
    has_top_level_alternation,
    python_regex,
    regex_tokens,
)


@pytest.mark.parametrize(("pattern", "expected"), [
    pytest.param("/a|/b", True, id="bare alternation"),
    pytest.param(r"/a\|b", False, id="escaped bar"),
    pytest.param(r"/a\\|b", True, id="escaped backslash then bar"),
    pytest.param("/[a|b]", False, id="bar in a class"),
    pytest.param("/[]|]x", False, id="bracket first in a class is a literal"),
    pytest.param("/[^]|]x", False, id="bracket first in a negated class"),
    pytest.param(r"/[\]|]x", False, id="escaped bracket in a class"),
    pytest.param("/[a]|b", True, id="bar after a class"),
    pytest.param("/(a|b)", False, id="bar in a group"),
    pytest.param("/(a(b|c)|d)", False, id="bars in nested groups"),
    pytest.param("/(a(b|c))|d", True, id="bar after nested groups"),
    pytest.param("/(?<id>a|b)", False, id="bar in a named group"),
    pytest.param("/(?<=a|b)c", False, id="bar in a lookbehind"),
    pytest.param(r"/\((a|b", False, id="escaped paren opens no group"),
    pytest.param(r"/(a\)|b)", False, id="escaped paren closes no group"),
    pytest.param("/(a[)]|b)", False, id="paren in a class closes no group"),
    pytest.param("/[a|b", False, id="unclosed class"),
])
def test_top_level_alternation(pattern: str, expected: bool) -> None:
    assert has_top_level_alternation(pattern) is expected


@pytest.mark.parametrize(("pattern", "expected"), [
    pytest.param("/(?<id>[0-9]+)", "/(?P<id>[0-9]+)", id="named group"),
    pytest.param(r"/(?<a>x)\k<a>", "/(?P<a>x)(?P=a)", id="back reference"),
    pytest.param(r"/x\z", r"/x\Z", id="end of subject"),
    pytest.param("/(?<=a)(?<!b)c", "/(?<=a)(?<!b)c", id="lookbehinds kept"),
    pytest.param(r"/[\k<a>\z(?<n>]", r"/[\k<a>\z(?<n>]", id="nothing changes in a class"),
    pytest.param(r"/\(?<n>x\)", r"/\(?<n>x\)", id="escaped paren is no group"),
    pytest.param(r"/(?<o>(?<i>a)|\\k<i>)", r"/(?P<o>(?P<i>a)|\\k<i>)",
                 id="nested named groups, an escaped backslash before k"),
    pytest.param("/a\\", "/a\\", id="trailing backslash kept"),
])
def test_python_regex(pattern: str, expected: str) -> None:
    assert python_regex(pattern) == expected


def test_tokens_cover_the_pattern() -> None:
    pattern = r"/(?<id>[^]|\]]+)\k<id>|\|x"
    tokens = list(regex_tokens(pattern))
    assert "".join(text for _, text in tokens) == pattern
    assert tokens == [(CHAR, "/"), (OPEN, "(?<"), (CHAR, "i"), (CHAR, "d"), (CHAR, ">"),
                      (CLASS, r"[^]|\]]"), (CHAR, "+"), (CLOSE, ")"), (ESCAPE, r"\k<id>"),
                      (CHAR, "|"), (ESCAPE, r"\|"), (CHAR, "x")]
