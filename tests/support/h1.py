"""HTTP/1.1 message heads and bodies, parsed by hand so tests see exactly what was on the wire.

Names are lower-cased; values are latin-1 strings. Only what the tests need: request and
response heads, Content-Length, chunked (with trailers) and close-delimited bodies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_HEAD = 256 * 1024


class ProtocolError(AssertionError):
    """The peer sent something that is not HTTP/1.1 as the tests expect it."""


@dataclass
class Head:
    start_line: str
    headers: list[tuple[str, str]]
    raw: bytes

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def names(self) -> set[str]:
        return {key for key, _ in self.headers}


def parse_head(raw: bytes) -> Head:
    """``raw`` is a head up to and including the blank line."""
    lines = raw.decode("latin-1").split("\r\n")
    if not lines or not lines[0]:
        raise ProtocolError(f"empty start line in {raw[:200]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line!r}")
        headers.append((name.lower(), value.strip(" \t")))
    return Head(lines[0], headers, raw)


def parse_chunk_size(line: bytes) -> int:
    size_text = line.split(b";", 1)[0].strip()
    try:
        return int(size_text, 16)
    except ValueError:
        raise ProtocolError(f"bad chunk size line {line!r}") from None


def parse_trailer_lines(lines: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        out.append((name.strip().lower(), value.strip()))
    return out


def request_framing(head: Head) -> str:
    """``chunked``, ``length`` or ``none`` for a request head."""
    te = head.get("transfer-encoding")
    if te is not None and te.lower().replace(" ", "").endswith("chunked"):
        return "chunked"
    return "length" if head.get("content-length") is not None else "none"


def response_framing(head: Head, status: int, method: str) -> str:
    """``none``, ``chunked``, ``length`` or ``close`` for a response head (RFC 9112 §6.3)."""
    if method == "HEAD" or status < 200 or status in (204, 304):
        return "none"
    te = head.get("transfer-encoding")
    if te is not None and te.lower().replace(" ", "").endswith("chunked"):
        return "chunked"
    if head.get("content-length") is not None:
        return "length"
    return "close"


@dataclass
class Response:
    version: str
    status: int
    reason: str
    head: Head
    body: bytes = b""
    framing: str = "none"
    trailers: list[tuple[str, str]] = field(default_factory=list)
    interim: list[Response] = field(default_factory=list)  # 1xx answers that came before

    def header(self, name: str) -> str | None:
        return self.head.get(name)

    def header_all(self, name: str) -> list[str]:
        return self.head.get_all(name)

    @property
    def headers(self) -> list[tuple[str, str]]:
        return self.head.headers

    def __repr__(self) -> str:
        return (
            f"Response({self.status} {self.reason!r}, framing={self.framing}, "
            f"headers={self.head.headers!r}, body={self.body[:200]!r}"
            f"{'...' if len(self.body) > 200 else ''})"
        )


def parse_status_line(head: Head) -> tuple[str, int, str]:
    parts = head.start_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {head.start_line!r}")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""


def build_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | dict[str, str] | None = None,
    body: bytes = b"",
    *,
    host: str | None = "test.local",
    version: str = "HTTP/1.1",
    content_length: bool = True,
) -> bytes:
    """Request bytes. Adds Host (unless ``host`` is None) and Content-Length for a body
    (unless ``content_length`` is False or the caller framed it)."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {n.lower() for n, _ in items}
    if host is not None and "host" not in names:
        items.insert(0, ("Host", host))
    framed = "content-length" in names or "transfer-encoding" in names
    if body and content_length and not framed:
        items.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in items)
    return head.encode("latin-1") + b"\r\n" + body


def chunked(*pieces: bytes, trailers: list[tuple[str, str]] | None = None) -> bytes:
    """A chunked body made of ``pieces`` then the last chunk and ``trailers``."""
    out = [b"%x\r\n%b\r\n" % (len(p), p) for p in pieces if p]
    out.append(b"0\r\n")
    out.extend(f"{n}: {v}\r\n".encode("latin-1") for n, v in trailers or [])
    out.append(b"\r\n")
    return b"".join(out)
