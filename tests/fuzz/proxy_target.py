"""The PROXY protocol parser as a fuzz target (``proxy``), pure functions only.

Byte 0 of an input chooses how the rest is cut into reads (the incremental reader must give
what the whole-buffer parser gives) and the mode (required or optional); the rest is what a
peer sent. Properties, for any input:
- ``parse_proxy_header`` returns None (incomplete), (header, used) with ``0 < used <= len``
  within the bounds (107 bytes for v1, 4 KiB for v2), or raises ProxyProtocolError; nothing
  else escapes it;
- an incomplete input never exceeds the bounds (it would have been refused);
- ``ProxyHeaderReader`` fed in pieces agrees with the parser on the whole input, and hands on
  exactly the bytes after the header (or, optional mode, every byte when there is none);
- a parsed header's addresses, written again by ``build_proxy_header``, parse back the same.
"""

from __future__ import annotations

import ipaddress

from propylon.proxy.proxy_protocol import (
    DEFAULT_MAX_LENGTH,
    V1_MAX_LENGTH,
    Absent,
    Parsed,
    Pending,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyProtocolError,
    ReadResult,
    build_proxy_header,
    parse_proxy_header,
)


class PropertyFailed(AssertionError):
    pass


def _whole(data: bytes) -> tuple[ProxyHeader, int] | str | None:
    try:
        result = parse_proxy_header(data)
    except ProxyProtocolError as exc:
        return f"error: {exc.reason}"
    if result is None:
        if data[:1] == b"P" and len(data) >= V1_MAX_LENGTH:
            raise PropertyFailed(f"a v1 prefix of {len(data)} bytes is still incomplete")
        if len(data) > DEFAULT_MAX_LENGTH:
            raise PropertyFailed(f"{len(data)} bytes and still incomplete")
        return None
    header, used = result
    if not 0 < used <= len(data):
        raise PropertyFailed(f"used {used} of {len(data)} bytes")
    if used > (V1_MAX_LENGTH if header.version == 1 else DEFAULT_MAX_LENGTH):
        raise PropertyFailed(f"a v{header.version} header of {used} bytes")
    return header, used


def _pieces(data: bytes, cut: int) -> list[bytes]:
    size = (cut & 0x1F) + 1
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def _incremental(data: bytes, cut: int, optional: bool) -> ReadResult | str:
    reader = ProxyHeaderReader(optional=optional)
    result: ReadResult = Pending()
    handed: list[bytes] = []
    try:
        for piece in _pieces(data, cut):
            if isinstance(result, Pending):
                result = reader.feed(piece)
                if isinstance(result, Parsed):
                    handed.append(result.rest)
                elif isinstance(result, Absent):
                    handed.append(result.data)
            else:
                handed.append(piece)  # after the header: the connection's own bytes
    except ProxyProtocolError as exc:
        return f"error: {exc.reason}"
    if isinstance(result, Parsed):
        return Parsed(result.header, b"".join(handed))
    if isinstance(result, Absent):
        return Absent(b"".join(handed))
    return result


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _round_trip(header: ProxyHeader) -> None:
    if header.source is None or header.destination is None:
        return
    addresses = (*header.source, *header.destination)
    again = parse_proxy_header(build_proxy_header(header.version, addresses))
    if again is None:
        raise PropertyFailed("a built header is incomplete")
    rebuilt = again[0]
    for before, after in ((header.source, rebuilt.source),
                          (header.destination, rebuilt.destination)):
        assert after is not None
        if _address(before[0]) != _address(after[0]) or before[1] != after[1]:
            raise PropertyFailed(f"round trip changed {before} into {after}")


def check_proxy(data: bytes) -> None:
    if not data:
        return
    control, payload = data[0], data[1:]
    optional = bool(control & 0x80)
    whole = _whole(payload)
    pieces = _incremental(payload, control, optional)
    if isinstance(whole, tuple):
        header, used = whole
        if not (isinstance(pieces, Parsed) and pieces.header == header
                and pieces.rest == payload[used:]):
            raise PropertyFailed(f"whole: {header} + {used} bytes; in pieces: {pieces}")
        _round_trip(header)
    elif isinstance(pieces, Absent):
        if not optional or pieces.data != payload:
            raise PropertyFailed(f"absent in pieces ({optional=}) but whole: {whole}")
    elif whole is None:
        if not isinstance(pieces, Pending):
            raise PropertyFailed(f"whole: incomplete; in pieces: {pieces}")
    elif not isinstance(pieces, str):
        raise PropertyFailed(f"whole: {whole}; in pieces: {pieces}")


def close() -> None:
    """Nothing to release (the target has no loop)."""
