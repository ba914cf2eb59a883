"""Pure pieces of the body policies: Accept-Encoding negotiation, codings, sizes, JSON
pointers, template checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from propylon.filters._codings import decode, encode, encoder, negotiate, parse_accept_encoding
from propylon.filters._json_pointer import PointerError, remove_value, set_value, tokens
from propylon.policies.body import CompressionPolicy, TransformPolicy, parse_size

PREFERENCE = ("zstd", "br", "gzip")


@pytest.mark.parametrize(("header", "expected"), [
    pytest.param(b"gzip", "gzip", id="one"),
    pytest.param(b"gzip, br", "br", id="tie-gateway-order"),
    pytest.param(b"gzip;q=1, br;q=0.5", "gzip", id="q"),
    pytest.param(b"*", "zstd", id="star"),
    pytest.param(b"*;q=0.3, zstd;q=0", "br", id="star-minus-one"),
    pytest.param(b"gzip;q=0.2, identity;q=0.5", None, id="identity-higher"),
    pytest.param(b"identity", None, id="identity-only"),
    pytest.param(b"", None, id="empty"),
    pytest.param(b"gzip;q=abc", None, id="bad-q-is-zero"),
    pytest.param(b"x-gzip;q=0.9, deflate", "gzip", id="x-gzip"),
    pytest.param(b"GZIP ; Q=0.8", "gzip", id="case-and-spaces"),
])
def test_negotiate(header: bytes, expected: str | None) -> None:
    assert negotiate(parse_accept_encoding([header]), PREFERENCE) == expected


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_codings_round_trip_streamed_and_whole(coding: str) -> None:
    data = b"propylon " * 5000
    streamed = encoder(coding)
    out = b"".join(streamed.encode(data[i:i + 1000]) for i in range(0, len(data), 1000))
    out += streamed.finish()
    assert decode(coding, out, len(data)) == data
    assert decode(coding, encode(coding, data), len(data)) == data
    with pytest.raises(ValueError, match="decodes to more than"):
        decode(coding, out, len(data) - 1)
    with pytest.raises(ValueError):
        decode(coding, b"not " + out, len(data))


@pytest.mark.parametrize(("value", "size"), [
    (0, 0), (1024, 1024), ("1MiB", 1 << 20), ("64KiB", 65536), ("2MB", 2_000_000), ("7", 7)])
def test_sizes(value: Any, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["1 TiB", "-1", "lots", True, -5, 1.5])
def test_bad_sizes(value: Any) -> None:
    with pytest.raises(ValueError):
        TransformPolicy.model_validate({"maxBodyBytes": value,
                                        "request": {"query": {"remove": ["a"]}}})


def test_pointers() -> None:
    assert tokens("/a~1b/c~0d/0") == ("a/b", "c~d", "0")
    doc: Any = {"a": [1, 2]}
    doc = set_value(doc, ("a", "-"), 3, "/a/-")
    doc = set_value(doc, ("b", "c"), {"d": 1}, "/b/c")
    doc = set_value(doc, ("a", "0"), 0, "/a/0")
    assert doc == {"a": [0, 2, 3], "b": {"c": {"d": 1}}}
    assert remove_value(doc, ("a", "1")) == {"a": [0, 3], "b": {"c": {"d": 1}}}
    assert remove_value(doc, ("nope", "x")) == doc
    assert set_value(doc, (), [1], "") == [1]
    with pytest.raises(PointerError):
        set_value({"a": 1}, ("a", "b"), 2, "/a/b")
    with pytest.raises(PointerError):
        set_value({"a": []}, ("a", "x"), 2, "/a/x")


@pytest.mark.parametrize(("section", "message"), [
    pytest.param({"response": {"body": {"template": "{% if %}"}}}, "template line 1",
                 id="syntax"),
    pytest.param({"response": {"body": {"template": "a\n{{ x | nope }}"}}}, "template line 2",
                 id="unknown-filter"),
    pytest.param({"response": {"body": {}}}, "exactly one of json, template", id="neither"),
    pytest.param({"request": {"body": {"json": {}, "template": "x"}}},
                 "exactly one of json, template", id="both"),
    pytest.param({"request": {"body": {"json": {"set": {"a": 1}}}}}, "JSON pointer",
                 id="pointer"),
    pytest.param({}, "transform needs", id="empty"),
])
def test_bad_transform_sections(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TransformPolicy.model_validate(section)


def test_compression_content_types_are_checked() -> None:
    with pytest.raises(ValidationError, match="invalid content type"):
        CompressionPolicy.model_validate({"contentTypes": ["json"]})
    assert CompressionPolicy.model_validate(
        {"contentTypes": ["Text/*"]}).content_types == ["text/*"]
