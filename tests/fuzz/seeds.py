"""Starting inputs and dictionaries of the fuzz targets, built from what the repository has.

http11: request streams written here, every request-like bytes literal of the edge and HTTP/1.1
integration tests, and the http-desync-guardian corpus when it is present (``CORPUS``), each
as one read and byte by byte; a few structured-mode inputs. config: every YAML file of
examples/, bench/ and the golden cases, the YAML blocks of docs/, and the harness's gateway.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = os.environ.get("PROPYLON_DESYNC_CORPUS", "/work/shared/conformance/http-desync-guardian")

_H = b"Host: fuzz.example\r\n"
REQUESTS = [
    b"GET / HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /direct HTTP/1.1\r\n" + _H + b"\r\nHEAD /chunked HTTP/1.1\r\n" + _H + b"\r\n",
    b"POST /retry/503 HTTP/1.1\r\n" + _H + b"Content-Length: 5\r\n\r\nhello",
    b"POST /cors HTTP/1.1\r\n" + _H + b"Origin: https://a.example\r\n"
    b"Transfer-Encoding: gzip, chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
    b"OPTIONS /cors HTTP/1.1\r\n" + _H + b"Origin: https://a.example\r\n"
    b"Access-Control-Request-Method: PUT\r\n\r\n",
    b"GET /101 HTTP/1.1\r\n" + _H + b"Connection: Upgrade\r\nUpgrade: echo\r\n\r\nhi",
    b"GET /x HTTP/1.1\r\n" + _H + b"Connection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    b"GET /close HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET http://fuzz.example:8080/rewrite/a?q=1 HTTP/1.1\r\nHost: other\r\nx-v: 1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /re/abc HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /close HTTP/1.0\r\n\r\n",
    b"PUT /100 HTTP/1.1\r\n" + _H + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /limited HTTP/1.1\r\n" + _H + b"Transfer-Encoding: chunked\r\n\r\n"
    b"40\r\n" + b"a" * 64 + b"\r\n1\r\nb\r\n0\r\n\r\n",
    b"GET /mirror/silent HTTP/1.1\r\n" + _H + b"X-Forwarded-For: 10.1.2.3\r\n"
    b"Forwarded: for=10.0.0.1;proto=https\r\n\r\n",
    b"GET /slowconnect HTTP/1.1\r\n" + _H + b"\r\n\xfe\xff\xfe\xffGET /direct HTTP/1.1\r\n"
    + _H + b"\r\n",
    b"DELETE /retry/reset HTTP/1.1\r\n" + _H + b"Connection: close\r\n\r\n",
    b"GET /dead HTTP/1.1\r\nHost: only.example\r\n\r\nGET /204 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /chunked HTTP/1.1\r\n" + _H + b"\xfe\xff\r\n",
]

HTTP_TOKENS = [
    b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"CONNECT", b"TRACE", b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n", b"\r\n", b"\r\n\r\n", b"Host: ", b"Content-Length: ", b"Transfer-Encoding: ",
    b"chunked", b"gzip, chunked", b"Connection: ", b"close", b"keep-alive", b"Upgrade",
    b"upgrade", b"Expect: 100-continue", b"Trailer: ", b"TE: trailers", b"X-Forwarded-For: ",
    b"Forwarded: ", b"Origin: ", b"Access-Control-Request-Method: ", b"0\r\n\r\n", b";ext=1",
    b"/direct", b"/redirect", b"/dead", b"/limited", b"/retry", b"/mirror", b"/cors",
    b"/rewrite", b"/re/", b"/slowconnect", b"/slowretry", b"/slowretry2", b"/blackhole",
    b"/101", b"/silent", b"/reset", b"/close", b"/chunked", b"/503", b"/204", b"/100",
    b"only.example", b"http://", b"*", b"?q=1", b"x-v: 1", b"\xfe\xff", b"\t", b" ", b"\x00",
    b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN\r\n", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11",
    b"203.0.113.7 192.0.2.1 51000 80\r\n",
]
CONFIG_TOKENS = [
    b"apiVersion: propylon.dev/v1", b"kind: ", b"metadata:", b"spec:", b"&a", b"*a", b"<<: ",
    b"- ", b": ", b"{", b"}", b"[", b"]", b"---\n", b"!!str", b"!!binary", b"null", b"~",
]


def _desync_cases() -> list[bytes]:
    if not os.path.isdir(CORPUS):
        return []
    from tests.integration.edge.test_desync_corpus import load_cases

    return [case.raw for case in load_cases()]


_REQUEST_LIKE = re.compile(rb"^[A-Z]+ \S* HTTP/")


def _test_literals() -> list[bytes]:
    """Bytes literals of the HTTP tests that look like requests (``b"GET / HTTP/1.1..."``)."""
    files = [*sorted((ROOT / "tests/integration/edge").glob("*.py")),
             ROOT / "tests/integration/test_http11.py"]
    found = []
    for file in files:
        if not file.exists():
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, bytes) and _REQUEST_LIKE.match(value):
                found.append(value)
    return found


def http11_seeds() -> list[bytes]:
    streams = [*REQUESTS, *_test_literals(), *_desync_cases()]
    seeds = [b"\x00\x00" + s for s in streams]  # raw mode, one read per segment
    seeds += [b"\x06\x01" + s for s in REQUESTS]  # trusted peer, half-close, byte by byte
    seeds += [bytes([1 + 2 * i]) + hashlib.sha256(b"%d" % i).digest() * 4 for i in range(8)]
    return seeds + _proxy_prefixed_seeds()


def _proxy_prefixed_seeds() -> list[bytes]:
    """The PROXY-prefixed mode (tests/fuzz/proxy_prefix.py): headers of both versions, valid,
    split across a pause and malformed, before requests; to a required and an optional
    listener, from the balancer and from a stranger; structured inputs behind a header."""
    from propylon.proxy.proxy_protocol import build_proxy_header

    v1 = build_proxy_header(1, ("203.0.113.7", 51000, "192.0.2.1", 80))
    v2 = build_proxy_header(2, ("2001:db8::7", 51000, "2001:db8::1", 443))
    headers = [v1, v2, build_proxy_header(1, None), build_proxy_header(2, None),
               build_proxy_header(1, ("192.0.2.99", 1, "192.0.2.1", 80)),  # a trusted proxy
               v1[:20] + b"\xfe\xff" + v1[20:],  # the header split by a pause
               b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", v2[:-3] + b"\r\n", b"PROXY " * 30]
    seeds = []
    for request in REQUESTS[:6]:
        for header in headers:
            seeds += [bytes([0xA2, 0]) + header + request,  # required, from the balancer
                      bytes([0xB2, 0]) + header + request]  # optional
        seeds += [bytes([0xB2, 0]) + request,  # optional without a header
                  bytes([0xA0, 0]) + v1 + request,  # a stranger: refused
                  bytes([0xB0, 0]) + request,  # a stranger without a header (optional)
                  bytes([0xAA, 0]) + request,  # the harness writes the header
                  bytes([0xA6, 1]) + v2 + request]  # byte by byte, half-close
    seeds += [bytes([flags]) + hashlib.sha256(b"%d" % flags).digest() * 4
              for flags in (0xA1, 0xA9, 0xB1, 0xB9)]  # structured behind a header
    return seeds


def _yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", markdown, flags=re.S)


def config_seeds() -> list[bytes]:
    from tests.fuzz.http_harness import CONFIG

    texts = [CONFIG]
    for pattern in ("examples/**/*.yaml", "bench/*.yaml", "tests/golden/cases/*.yaml"):
        texts += [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob(pattern))]
    for doc in sorted((ROOT / "docs").glob("*.md")):
        texts += _yaml_blocks(doc.read_text(encoding="utf-8"))
    return [t.encode("utf-8") for t in texts]


def proxy_seeds() -> list[bytes]:
    """PROXY protocol headers (valid, each version and family, with TLVs) and near misses;
    byte 0 is the target's control byte (how the input is cut, optional mode)."""
    import struct

    from propylon.proxy.proxy_protocol import V2_SIGNATURE, build_proxy_header

    def tlv(kind: int, value: bytes) -> bytes:
        return struct.pack("!BH", kind, len(value)) + value

    ssl = tlv(0x20, b"\x07\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"cn"))
    v2_tlvs = build_proxy_header(2, ("203.0.113.7", 1, "192.0.2.1", 443))
    body = v2_tlvs[16:] + tlv(0xEA, b"\x01vpce-1") + ssl + tlv(0x04, b"\0\0")
    v2_tlvs = v2_tlvs[:14] + struct.pack("!H", len(body)) + body
    headers = [
        build_proxy_header(1, ("203.0.113.7", 51000, "192.0.2.1", 80)),
        build_proxy_header(1, ("2001:db8::7", 1, "2001:db8::1", 2)),
        build_proxy_header(1, None),
        build_proxy_header(2, ("203.0.113.7", 51000, "192.0.2.1", 80)),
        build_proxy_header(2, ("2001:db8::7", 1, "2001:db8::1", 2)),
        build_proxy_header(2, None),
        v2_tlvs,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65535 0\r\n",
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        V2_SIGNATURE + b"\x21\x31\x00\xd8" + bytes(216),
    ]
    tails = [b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"\x16\x03\x01\x00\x05"]
    seeds = [bytes([control]) + header + tail
             for header in headers for tail in tails for control in (0x00, 0x83)]
    seeds += [b"\x80GET / HTTP/1.1\r\n\r\n", b"\x81\x16\x03\x01", b"\x00PROXY "]
    return seeds


PROXY_TOKENS = [b"PROXY ", b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"\r\n", b"\r\n\r\n\x00\r\nQUIT\n",
                b"\x21\x11", b"\x21\x21", b"\x20\x00", b"\xea", b"::ffff:", b"127.0.0.1"]
SEEDS = {"http11": http11_seeds, "config": config_seeds, "proxy": proxy_seeds}
TOKENS = {"http11": HTTP_TOKENS, "config": CONFIG_TOKENS, "proxy": PROXY_TOKENS}


def write_seeds(target: str, folder: Path) -> int:
    """The seeds of ``target`` as files in ``folder`` (named by content); how many."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS[target]()
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    return len(seeds)


def write_dictionary(target: str, path: Path) -> None:
    """A libFuzzer dictionary: one quoted token per line, bytes escaped as \\xNN."""
    path.write_text("".join(f'"{_escape(t)}"\n' for t in TOKENS[target]), encoding="ascii")


def _escape(token: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in token)


def all_seeds(target: str) -> Iterable[bytes]:
    return SEEDS[target]()
