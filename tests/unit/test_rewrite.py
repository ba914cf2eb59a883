import pytest

from propylon.ir import RedirectIR
from propylon.proxy.rewrite import (
    RESPONSE_HOP_FIELDS,
    redirect_location,
    response_fields,
    rewrite_path,
)


@pytest.mark.parametrize(
    ("path", "prefix_from", "prefix_to", "replace", "expected"),
    [
        pytest.param(b"/api/x", b"/api", b"/", None, b"/x", id="prefix-to-root"),
        pytest.param(b"/api", b"/api", b"/", None, b"/", id="exact-prefix-to-root"),
        pytest.param(b"/api/", b"/api", b"/v2", None, b"/v2/", id="trailing-slash-kept"),
        pytest.param(b"/api/x/y", b"/api", b"/v2/", None, b"/v2/x/y", id="to-with-slash"),
        pytest.param(b"/api/x", b"/api", b"", None, b"/x", id="to-empty"),
        pytest.param(b"/a/b", None, b"", b"/fixed", b"/fixed", id="full-path"),
        pytest.param(b"/a/b", None, b"", None, b"/a/b", id="no-rewrite"),
    ],
)
def test_rewrite_path(path: bytes, prefix_from: bytes | None, prefix_to: bytes,
                      replace: bytes | None, expected: bytes) -> None:
    assert rewrite_path(path, prefix_from, prefix_to, replace) == expected


@pytest.mark.parametrize(
    ("redirect", "host_field", "expected"),
    [
        pytest.param(RedirectIR(301, path="/new"), b"a.example:8080",
                     "http://a.example:8080/new?q=1", id="path-keeps-port"),
        pytest.param(RedirectIR(302, scheme="https"), b"a.example:8080",
                     "https://a.example/old?q=1", id="scheme-change-drops-port"),
        pytest.param(RedirectIR(302, scheme="https", port=8443), b"a.example",
                     "https://a.example:8443/old?q=1", id="explicit-port"),
        pytest.param(RedirectIR(307, host="b.example"), b"a.example:80",
                     "http://b.example/old?q=1", id="host-default-port-omitted"),
        pytest.param(RedirectIR(308), b"[::1]:9000", "http://[::1]:9000/old?q=1", id="ipv6"),
    ],
)
def test_redirect_location(redirect: RedirectIR, host_field: bytes, expected: str) -> None:
    assert redirect_location(redirect, "http", host_field, "fallback", b"/old", b"q=1") == expected


@pytest.mark.parametrize(
    ("path", "prefix_from", "prefix", "expected"),
    [
        pytest.param(b"/old/x", b"/old", "/new", "http://a/new/x", id="replaced"),
        pytest.param(b"/old", b"/old", "/new", "http://a/new", id="the-prefix-itself"),
        pytest.param(b"/old/x", b"/old", "/", "http://a/x", id="stripped"),
        pytest.param(b"/old/x", None, "/new", "http://a/old/x", id="not-a-prefix-match"),
    ],
)
def test_redirect_location_replaces_the_matched_prefix(
        path: bytes, prefix_from: bytes | None, prefix: str, expected: str) -> None:
    redirect = RedirectIR(302, prefix=prefix)
    assert redirect_location(redirect, "http", b"a", "a", path, b"", prefix_from) == expected


def _split(headers: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], ...]:
    """As the upstream parser callback does: hop-by-hop fields apart (Content-Length is
    taken out by the callback itself)."""
    hop = [h for h in headers if h[0] in RESPONSE_HOP_FIELDS and h[0] != b"content-length"]
    return [h for h in headers if h[0] not in RESPONSE_HOP_FIELDS], hop


def test_response_fields_drop_hop_by_hop_and_named() -> None:
    headers = [
        (b"content-type", b"text/plain"), (b"connection", b"close, x-internal"),
        (b"x-internal", b"secret"), (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"), (b"content-length", b"12"), (b"x-ok", b"1"),
    ]
    kept, chunked = response_fields(*_split(headers))
    assert kept == [(b"content-type", b"text/plain"), (b"x-ok", b"1")]
    assert chunked


def test_response_fields_common_connection_values_need_no_second_pass() -> None:
    fields = [(b"server", b"x")]
    kept, chunked = response_fields(fields, [(b"connection", b"keep-alive")])
    assert kept is fields and not chunked
