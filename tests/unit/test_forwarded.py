import ipaddress

import pytest

from propylon.proxy.forwarded import client_ip_from_chain, forwarding_headers

TRUSTED = [ipaddress.ip_network("10.0.0.0/8")]


def is_trusted(ip: str) -> bool:
    return any(ipaddress.ip_address(ip) in n for n in TRUSTED)


@pytest.mark.parametrize(
    ("chain", "peer", "expected"),
    [
        pytest.param([], "10.0.0.1", "10.0.0.1", id="no-chain-uses-peer"),
        pytest.param(["1.2.3.4"], "10.0.0.1", "1.2.3.4", id="one-hop"),
        pytest.param(["6.6.6.6", "1.2.3.4", "10.1.1.1"], "10.0.0.1", "1.2.3.4",
                     id="rightmost-untrusted-wins-over-spoofed-left"),
        pytest.param(["10.2.2.2", "10.1.1.1"], "10.0.0.1", "10.2.2.2", id="all-trusted-leftmost"),
    ],
)
def test_client_ip_from_chain(chain: list[str], peer: str, expected: str) -> None:
    assert client_ip_from_chain(chain, peer, is_trusted) == expected


def test_untrusted_peer_claims_are_replaced() -> None:
    received = {b"x-forwarded-for": b"6.6.6.6", b"x-forwarded-proto": b"https",
                b"forwarded": b"for=6.6.6.6"}
    client, headers = forwarding_headers("192.0.2.7", False, received, b"http", b"a.example",
                                         is_trusted)
    assert client == "192.0.2.7"
    assert dict(headers) == {
        b"x-forwarded-for": b"192.0.2.7",
        b"x-forwarded-proto": b"http",
        b"x-forwarded-host": b"a.example",
        b"forwarded": b"for=192.0.2.7;proto=http;host=a.example",
    }


def test_trusted_peer_chain_is_extended() -> None:
    received = {b"x-forwarded-for": b"1.2.3.4", b"x-forwarded-proto": b"https",
                b"x-forwarded-host": b"public.example", b"forwarded": b"for=1.2.3.4"}
    client, headers = forwarding_headers("10.0.0.5", True, received, b"http", b"inner",
                                         is_trusted)
    assert client == "1.2.3.4"
    h = dict(headers)
    assert h[b"x-forwarded-for"] == b"1.2.3.4, 10.0.0.5"
    assert h[b"x-forwarded-proto"] == b"https"
    assert h[b"x-forwarded-host"] == b"public.example"
    assert h[b"forwarded"] == b"for=1.2.3.4, for=10.0.0.5;proto=http;host=inner"


def test_ipv6_peer_is_quoted_in_forwarded() -> None:
    _, headers = forwarding_headers("::1", False, {}, b"http", b"h", is_trusted)
    assert dict(headers)[b"forwarded"] == b'for="[::1]";proto=http;host=h'
