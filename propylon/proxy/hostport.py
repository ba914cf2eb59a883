"""Splitting a Host field or authority into host and port."""

from __future__ import annotations

import ipaddress


def split_host(value: bytes) -> tuple[str, int | None]:
    """Host field -> (lower-case host without port, port or None); ``[v6]`` keeps brackets."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    return host, int(port_text) if port_text.isdigit() else None


def is_ip_literal(host: str) -> bool:
    """Whether a Host (without port) is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
