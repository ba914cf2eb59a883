"""What an upstream connection's end says, for the access log's ``error``."""

from __future__ import annotations


def closed_reason(exc: BaseException | None) -> str:
    """The reason of a request failed by its upstream connection's closing, with the error
    that closed it: a TLS 1.3 server refusing the gateway's client certificate does it with an
    alert read after the handshake (``tlsv13 alert certificate required``), a reset with
    ``Connection reset by peer``."""
    return "upstream connection closed" if exc is None else f"upstream connection closed: {exc}"
