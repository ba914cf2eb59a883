"""Field names lowered by the HTTP/1.1 codecs (proxy/field_names.py)."""

from __future__ import annotations

import pytest

from propylon.proxy.field_names import _COMMON, lower_name


@pytest.mark.parametrize("written", [
    b"Content-Type", b"content-type", b"CONTENT-TYPE", b"cOnTeNt-TyPe", b"X-Request-Id",
    b"Host", b"X-Custom-Field", b"x_under_score", b"Te",
])
def test_names_are_lowered_as_bytes_lower_does(written: bytes) -> None:
    assert lower_name(written) == written.lower()


def test_a_common_name_is_one_shared_object_however_it_was_written() -> None:
    forms = [b"Content-Length", b"content-length", b"CONTENT-LENGTH"]
    lowered = {id(lower_name(bytes(form))) for form in forms}  # new objects, as a parser makes
    assert len(lowered) == 1


@pytest.mark.parametrize("name", _COMMON)
def test_every_common_name_in_any_form_is_its_shared_object(name: bytes) -> None:
    forms = {name, name.title(), name.upper(), name.capitalize(), name.swapcase(),
             bytes(c ^ 0x20 if i % 2 and chr(c).isalpha() else c for i, c in enumerate(name))}
    for form in forms:
        assert lower_name(bytes(form)) is name, form


@pytest.mark.parametrize("written", [
    b"", b"H", b"\xc8ost", b"Hos", b"Hostt", b"X" * 63, b"X" * 64, b"X-" * 200, b"\x00",
    b"content-lengtH", b"Content_Length",
])
def test_other_names_are_lowered_too(written: bytes) -> None:
    assert lower_name(written) == written.lower()
