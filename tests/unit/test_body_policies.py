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


# -- cache rules -----------------------------------------------------------------------------
def _h(*fields: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in fields]


@pytest.mark.parametrize(("status", "asked", "response", "ttl", "expected"), [
    pytest.param(200, [], [("cache-control", "max-age=30")], 0, 30.0, id="max-age"),
    pytest.param(200, [], [("cache-control", "max-age=30, s-maxage=5")], 0, 5.0, id="s-maxage"),
    pytest.param(200, [], [("cache-control", "no-cache, max-age=30")], 0, 0.0, id="no-cache"),
    pytest.param(200, [], [], 12, 12.0, id="default-ttl"),
    pytest.param(201, [], [], 12, None, id="default-ttl-only-for-cacheable-statuses"),
    pytest.param(206, [], [("cache-control", "max-age=30")], 0, None, id="partial"),
    pytest.param(200, [("authorization", "x")], [("cache-control", "must-revalidate, max-age=9")],
                 0, 9.0, id="authorization-must-revalidate"),
    pytest.param(200, [], [("expires", "nonsense")], 0, 0.0, id="bad-expires-is-expired"),
    pytest.param(200, [], [("cache-control", "max-age=30"), ("vary", "a, *")], 0, None,
                 id="vary-star"),
])
def test_storable(status: int, asked: list[tuple[str, str]],
                  response: list[tuple[str, str]], ttl: float, expected: float | None) -> None:
    from propylon.filters._cache_rules import directives, storable

    req, resp = _h(*asked), _h(*response)
    assert storable(status, req, directives(req), resp, directives(resp), ttl) == expected


def test_conditionals() -> None:
    from propylon.filters._cache_rules import etag_matches, not_modified

    assert etag_matches(b'W/"a", "b"', b'"a"') and etag_matches(b"*", b'"x"')
    assert not etag_matches(b'"a"', None) and not etag_matches(b'"a"', b'"b"')
    stored = _h(("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"), ("etag", '"e"'))
    assert not_modified(_h(("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")), stored)
    assert not not_modified(_h(("if-none-match", '"x"'),
                               ("if-modified-since", "Wed, 21 Oct 2030 07:28:00 GMT")), stored)


def test_memory_store_evicts_least_recently_used_by_bytes() -> None:
    from propylon.filters._cache_store import Entry, MemoryStore

    store = MemoryStore(max_bytes=3 * (1000 + 200))
    for name in "abcd":
        store.put(Entry(name, (), 200, [], b"x" * 1000, 0.0, 0.0, 60.0, 0.0, 0.0))
        assert store.get("a", []) is not None  # "a" stays the most recently used
    assert store.get("b", []) is None and store.get("d", []) is not None
    assert store.bytes <= store.max_bytes
    assert store.purge({"prefix": "a"}) == 1 and store.get("a", []) is None
