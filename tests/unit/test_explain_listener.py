"""Which listener ``propylon explain`` assumes a request arrives on (no sockets)."""

from __future__ import annotations

import pytest

from propylon import ir
from propylon.explain import ListenerChoiceError, arrival_port


def _snapshot(*gateways: tuple[str, list[tuple[str, int, str]]]) -> ir.SnapshotIR:
    return ir.SnapshotIR(gateways=tuple(
        ir.GatewayIR(key, tuple(ir.ListenerIR(name, port, protocol)
                                for name, port, protocol in listeners), (), ())
        for key, listeners in gateways))


ONE = _snapshot(("infra/edge", [("web", 8080, "HTTP")]))
WEB_AND_TLS = _snapshot(("infra/edge", [("web", 8080, "HTTP"), ("websecure", 8443, "HTTPS")]))
ON_80 = _snapshot(("infra/edge", [("web", 80, "HTTP"), ("alt", 8080, "HTTP")]))
TWO_GATEWAYS = _snapshot(("infra/edge", [("web", 8080, "HTTP")]),
                         ("team/api", [("web", 9090, "HTTP")]))


@pytest.mark.parametrize(
    ("snapshot", "scheme", "port", "listener", "expected"),
    [
        pytest.param(ONE, "http", 9999, None, 9999, id="explicit-port-wins"),
        pytest.param(ONE, "http", None, None, 8080, id="the-only-listener"),
        pytest.param(WEB_AND_TLS, "http", None, None, 8080, id="the-only-http-listener"),
        pytest.param(WEB_AND_TLS, "https", None, None, 8443, id="the-only-https-listener"),
        pytest.param(ON_80, "http", None, None, 80, id="the-default-port"),
        pytest.param(ON_80, "http", 80, "alt", 8080, id="listener-by-name-over-the-url"),
        pytest.param(TWO_GATEWAYS, "http", None, "team/api/web", 9090, id="gateway-and-name"),
        pytest.param(TWO_GATEWAYS, "http", None, "9090", 9090, id="listener-by-port"),
    ],
)
def test_arrival_port(snapshot, scheme, port, listener, expected) -> None:
    assert arrival_port(snapshot, scheme, port, listener) == expected


@pytest.mark.parametrize(
    ("snapshot", "scheme", "listener", "reason"),
    [
        pytest.param(TWO_GATEWAYS, "http", None, "choose one with --listener", id="two-fit"),
        pytest.param(ONE, "https", None, "no HTTPS listener", id="none-fits"),
        pytest.param(TWO_GATEWAYS, "http", "web", "names several ports", id="ambiguous-name"),
        pytest.param(ONE, "http", "nope", "names no listener", id="unknown-name"),
        pytest.param(ONE, "http", "81", "names no listener", id="unknown-port"),
    ],
)
def test_arrival_port_cannot_be_chosen(snapshot, scheme, listener, reason) -> None:
    with pytest.raises(ListenerChoiceError, match=reason):
        arrival_port(snapshot, scheme, None, listener)
