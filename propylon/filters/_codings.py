"""Content codings (RFC 9110 §8.4): ``Accept-Encoding`` negotiation and streaming encoders
and decoders for ``gzip``, ``br`` and ``zstd``.

Encoders flush at the end of every ``encode`` call (gzip Z_SYNC_FLUSH, Brotli and zstd block
flushes), so what the upstream sent in one piece reaches the client in one piece: a stream
of server-sent events stays a stream. The cost is a few bytes per chunk.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable

import brotli  # type: ignore[import-untyped]
import zstandard

GZIP_LEVEL = 6  # zlib's default: nginx's gzip_comp_level 1 is faster, and 6 is ~25 % smaller
BROTLI_QUALITY = 4  # the streaming sweet spot (11, the default, is for static files)
ZSTD_LEVEL = 3  # zstd's default

_ALIASES = {"x-gzip": "gzip"}


def parse_accept_encoding(values: Iterable[bytes]) -> dict[str, float]:
    """Coding -> q-value of every element of the ``Accept-Encoding`` fields (lower-case;
    ``x-gzip`` counts as ``gzip``; an unreadable q-value counts as 0)."""
    found: dict[str, float] = {}
    for value in values:
        for item in value.decode("latin-1").split(","):
            name, _, params = item.partition(";")
            name = name.strip().lower()
            if not name:
                continue
            q = 1.0
            for param in params.split(";"):
                key, _, number = param.partition("=")
                if key.strip().lower() == "q":
                    try:
                        q = min(max(float(number.strip()), 0.0), 1.0)
                    except ValueError:
                        q = 0.0
            found[_ALIASES.get(name, name)] = q
    return found


def negotiate(accepted: dict[str, float], preference: tuple[str, ...]) -> str | None:
    """The coding to answer with, or None for identity. A coding not named takes the q of
    ``*`` (0 without it); the highest q wins, ties go to the gateway's ``preference`` order;
    identity wins only when the client names it with a higher q than the best coding (a
    client that lists codings wants one, whatever the q-values it gives them)."""
    if not accepted:
        return None
    star = accepted.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in preference:
        q = accepted.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    if best is None or best_q < accepted.get("identity", 0.0):
        return None
    return best


class Encoder:
    """One body's encoder; ``encode`` returns what can be sent now, ``finish`` the end."""

    __slots__ = ("_flush", "_process", "_tail")

    def __init__(self, process: Callable[[bytes], bytes], flush: Callable[[], bytes],
                 tail: Callable[[], bytes]) -> None:
        self._process = process
        self._flush = flush
        self._tail = tail

    def encode(self, data: bytes) -> bytes:
        return self._process(data) + self._flush()

    def finish(self, data: bytes = b"") -> bytes:
        return self._process(data) + self._tail() if data else self._tail()


def encoder(coding: str) -> Encoder:
    if coding == "gzip":
        z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return Encoder(z.compress, lambda: z.flush(zlib.Z_SYNC_FLUSH), z.flush)
    if coding == "br":
        b = brotli.Compressor(quality=BROTLI_QUALITY)
        return Encoder(b.process, b.flush, b.finish)
    if coding == "zstd":
        c = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        return Encoder(c.compress, lambda: c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK), c.flush)
    raise ValueError(f"unknown content coding {coding!r}")


def encode(coding: str, data: bytes) -> bytes:
    """A whole body, encoded."""
    return encoder(coding).finish(data)


DECODABLE = frozenset(("gzip", "x-gzip", "br", "zstd"))


def decode(coding: str, data: bytes, limit: int) -> bytes:
    """A whole body, decoded; ``ValueError`` when it is corrupt or decodes to more than
    ``limit`` bytes (a small body may expand a thousandfold)."""
    try:
        if coding in ("gzip", "x-gzip"):
            z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = z.decompress(data, limit + 1)
        elif coding == "br":
            d = brotli.Decompressor()
            out = d.process(data, output_buffer_limit=limit + 1)
        elif coding == "zstd":
            out = _zstd_decode(data, limit + 1)
        else:
            raise ValueError(f"unknown content coding {coding!r}")
    except (zlib.error, brotli.error, zstandard.ZstdError) as exc:
        raise ValueError(f"corrupt {coding} body: {exc}") from None
    if len(out) > limit:
        raise ValueError(f"the {coding} body decodes to more than {limit} bytes")
    return out


def _zstd_decode(data: bytes, most: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
        while size < most:
            piece = reader.read(most - size)
            if not piece:
                break
            parts.append(piece)
            size += len(piece)
    return b"".join(parts)
