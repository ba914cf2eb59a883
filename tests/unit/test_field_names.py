"""Field names lowered by the HTTP/1.1 codecs (proxy/field_names.py)."""

from __future__ import annotations

import pytest

from propylon.proxy.field_names import lower_name


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
