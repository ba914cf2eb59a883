"""proxy/path.py: request path normalisation before routing (issue #11 item 2)."""

from __future__ import annotations

import pytest

from propylon.ir import PathNormalizationIR
from propylon.proxy.path import PathError, normalize_path, remove_dot_segments

DEFAULT = PathNormalizationIR()


@pytest.mark.parametrize("raw, expected", [
    pytest.param(b"/%61dmin", b"/admin", id="encoded-unreserved-letter"),
    pytest.param(b"/%7Euser/%2D%5F%2e", b"/~user/-_.", id="encoded-unreserved-marks"),
    pytest.param(b"/./admin", b"/admin", id="dot-segment"),
    pytest.param(b"/public/../admin", b"/admin", id="dot-dot-segment"),
    pytest.param(b"/%2e/admin", b"/admin", id="encoded-dot"),
    pytest.param(b"/public/%2E%2E/admin", b"/admin", id="encoded-dot-dot"),
    pytest.param(b"/public/.%2e/admin", b"/admin", id="half-encoded-dot-dot"),
    pytest.param(b"//admin", b"/admin", id="double-slash"),
    pytest.param(b"/a///b//", b"/a/b/", id="slash-runs"),
    pytest.param(b"/a//../b", b"/b", id="merge-before-dots"),
    pytest.param(b"/../../admin", b"/admin", id="never-above-root"),
    pytest.param(b"/a/b/..", b"/a/", id="trailing-dot-dot"),
    pytest.param(b"/a/.", b"/a/", id="trailing-dot"),
    pytest.param(b"/.well-known/x", b"/.well-known/x", id="dot-name-kept"),
    pytest.param(b"/a%20b%3f", b"/a%20b%3F", id="reserved-kept-upper-hex"),
    pytest.param(b"/caf%C3%A9", b"/caf%C3%A9", id="utf8-kept"),
    pytest.param(b"/admin;x=1/", b"/admin;x=1/", id="parameters-kept"),
    pytest.param(b"/Admin", b"/Admin", id="case-kept"),
])
def test_normalized(raw: bytes, expected: bytes) -> None:
    assert normalize_path(raw, DEFAULT) == expected


@pytest.mark.parametrize("raw", [
    pytest.param(b"/admin%2Fx", id="encoded-slash"),
    pytest.param(b"/public%2f..%2fadmin", id="encoded-slash-traversal"),
    pytest.param(b"/a%5Cb", id="encoded-backslash"),
    pytest.param(b"/a\\b", id="raw-backslash"),
    pytest.param(b"/a%zz", id="bad-hex"),
    pytest.param(b"/a%4", id="truncated-escape"),
    pytest.param(b"/a#frag", id="fragment"),
])
def test_rejected_by_default(raw: bytes) -> None:
    with pytest.raises(PathError):
        normalize_path(raw, DEFAULT)


@pytest.mark.parametrize("options, raw, expected", [
    pytest.param(PathNormalizationIR(escaped_slashes="keep"), b"/a%2fb/../c", b"/c",
                 id="keep-escaped-slash-is-one-segment"),
    pytest.param(PathNormalizationIR(escaped_slashes="keep"), b"/a%2fb", b"/a%2Fb",
                 id="keep-escaped-slash"),
    pytest.param(PathNormalizationIR(escaped_slashes="unescape"), b"/public%2f..%2fadmin",
                 b"/admin", id="unescape-then-resolve"),
    pytest.param(PathNormalizationIR(escaped_slashes="unescape"), b"/a\\..\\admin", b"/admin",
                 id="unescape-backslash"),
    pytest.param(PathNormalizationIR(merge_slashes=False), b"//admin", b"//admin",
                 id="no-merge"),
    pytest.param(PathNormalizationIR(path_parameters="strip"), b"/admin;jsessionid=1/x;y",
                 b"/admin/x", id="strip-parameters"),
])
def test_options(options: PathNormalizationIR, raw: bytes, expected: bytes) -> None:
    assert normalize_path(raw, options) == expected


def test_parameters_rejected_when_asked() -> None:
    with pytest.raises(PathError):
        normalize_path(b"/admin;x/", PathNormalizationIR(path_parameters="reject"))


@pytest.mark.parametrize("raw, expected", [
    (b"/a/b/c/./../../g", b"/a/g"),  # RFC 3986 §5.2.4's example
    (b"/mid/content=5/../6", b"/mid/6"),
    (b"/", b"/"),
    (b"/..", b"/"),
])
def test_remove_dot_segments(raw: bytes, expected: bytes) -> None:
    assert remove_dot_segments(raw) == expected
