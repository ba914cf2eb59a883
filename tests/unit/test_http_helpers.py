import pytest

from propylon.admin.redact import REDACTED, redact
from propylon.filters._common import trimmed
from propylon.filters.base import FilterEnv
from propylon.filters.headers import HeadersFilter
from propylon.policies.headers import HeadersSettings
from propylon.proxy.grpc import MessageFraming
from propylon.proxy.hostport import split_host
from propylon.proxy.http11 import (
    GROWN_FIELDS,
    connection_tokens,
    head_with_fields,
    is_token,
    serialize_headers,
    simple_response,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"Example.COM", ("example.com", None), id="lowercased"),
        pytest.param(b"a.example:8080", ("a.example", 8080), id="port"),
        pytest.param(b"[::1]:9000", ("[::1]", 9000), id="ipv6-port"),
        pytest.param(b"[::1]", ("[::1]", None), id="ipv6"),
        pytest.param(b"a:notaport", ("a", None), id="bad-port-ignored"),
    ],
)
def test_split_host(value: bytes, expected: tuple[str, int | None]) -> None:
    assert split_host(value) == expected


@pytest.mark.parametrize("piece", [1, 4, 7, 1000], ids=lambda n: f"pieces-of-{n}")
def test_grpc_message_framing_knows_the_ends_of_messages(piece: int) -> None:
    """Whatever the cuts (a prefix split too), only the ends of messages are between them."""
    messages = [b"", b"abc", bytes(300)]  # 300: a length over one byte
    body = b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in messages)
    ends = {0, 5, 13, 318}
    for size in range(len(body) + 1):
        framing = MessageFraming()
        for at in range(0, size, piece):
            framing.feed(body[at:min(at + piece, size)])
        assert framing.between_messages == (size in ends), size


def test_connection_tokens() -> None:
    assert connection_tokens(b"Keep-Alive, X-Secret ,, close") == {
        b"keep-alive", b"x-secret", b"close"}


@pytest.mark.parametrize(
    ("name", "ok"),
    [(b"x-a", True), (b"X_A", True), (b"", False), (b"a b", False), (b"a:b", False)],
)
def test_is_token(name: bytes, ok: bool) -> None:
    assert is_token(name) is ok


@pytest.mark.parametrize("count", [0, 1, GROWN_FIELDS, GROWN_FIELDS + 1, 100])
def test_head_with_fields_writes_every_field_in_order(count: int) -> None:
    fields = [(b"x-field-%d" % i, b"value %d" % i) for i in range(count)]
    lines = b"".join(b"x-field-%d: value %d\r\n" % (i, i) for i in range(count))
    assert head_with_fields(b"HTTP/1.1 200 OK\r\n", fields) == b"HTTP/1.1 200 OK\r\n" + lines
    assert serialize_headers(fields) == lines


def test_head_with_fields_refuses_what_is_not_bytes() -> None:
    with pytest.raises(TypeError):
        head_with_fields(b"", [(b"x-name", "text")])  # type: ignore[list-item]


def test_simple_response_framing() -> None:
    assert simple_response(204) == b"HTTP/1.1 204 No Content\r\n\r\n"
    resp = simple_response(404, b"nope", close=True)
    assert resp.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"content-length: 4\r\n" in resp and b"connection: close\r\n" in resp
    assert resp.endswith(b"\r\n\r\nnope")
    head = simple_response(200, b"body", head_only=True)
    assert b"content-length: 4" in head and not head.endswith(b"body")


class _Ctx:
    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.request_headers = headers


def test_headers_filter_edits_in_order() -> None:
    spec = {
        "request": {"set": {"X-Env": "prod"}, "add": {"x-tag": "a"}, "remove": ["x-debug"]},
        "response": {"set": {"x-served-by": "edge"}},
    }
    f = HeadersFilter.from_spec(HeadersSettings.model_validate(spec), "test", FilterEnv(None))
    ctx = _Ctx([(b"x-env", b"dev"), (b"x-debug", b"1"), (b"x-tag", b"z")])
    f.on_upstream_request(ctx)  # type: ignore[arg-type]
    assert ctx.request_headers == [(b"x-tag", b"z"), (b"x-env", b"prod"), (b"x-tag", b"a")]
    response: list[tuple[bytes, bytes]] = [(b"x-served-by", b"origin")]
    f.on_response(ctx, 200, response)  # type: ignore[arg-type]
    assert response == [(b"x-served-by", b"edge")]


def test_headers_filter_skips_unused_phases() -> None:
    from propylon.filters.base import overrides

    response_only = HeadersFilter.from_spec(
        HeadersSettings.model_validate({"response": {"set": {"a": "b"}}}), "t", FilterEnv(None))
    assert overrides(response_only, "on_response")
    assert not overrides(response_only, "on_upstream_request")
    request_only = HeadersFilter.from_spec(
        HeadersSettings.model_validate({"request": {"remove": ["a"]}}), "t", FilterEnv(None))
    assert overrides(request_only, "on_upstream_request")
    assert not overrides(request_only, "on_response")


def test_redact_hides_secret_fields_only() -> None:
    data = {"key": "ns/name", "spec": {"password": "p", "apiKey": "k", "token": ""},
            "list": [{"secret": "s"}]}
    assert redact(data) == {"key": "ns/name", "spec": {"password": REDACTED,
                            "apiKey": REDACTED, "token": ""}, "list": [{"secret": REDACTED}]}


def test_redact_names_every_spelling_each_time_and_copies() -> None:
    """Field names are judged once and remembered: every spelling, asked again, is judged
    the same; values of other types are copied, scalars kept, nothing shared with the input."""
    data = {"Private-Key": "k", "private_key": "k", "PRIVATEKEY": "k", "api_keys": ["a"],
            "nested": [[{"Salt": "s", "n": 1}], "text", 2.5, None, True], "kept": {"a": "b"}}
    want = {"Private-Key": REDACTED, "private_key": REDACTED, "PRIVATEKEY": REDACTED,
            "api_keys": REDACTED, "nested": [[{"Salt": REDACTED, "n": 1}], "text", 2.5, None,
                                             True], "kept": {"a": "b"}}
    first, second = redact(data), redact(data)
    assert first == second == want
    assert first["kept"] is not data["kept"] and first["nested"] is not data["nested"]


@pytest.mark.parametrize(
    "value", [b"", b"key", b" key", b"key \t", b"\tkey", b"k e y", b" ", b"\x0bkey\x0c"])
def test_trimmed_is_strip(value: bytes) -> None:
    assert trimmed(value) == value.strip()
