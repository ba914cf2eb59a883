"""Request path normalisation, once per request, before routing (sans-IO, pure functions).

Two servers that read one path differently are how a rule such as ``prefix: /admin`` with an
auth policy gets bypassed (``/%61dmin``, ``/./admin``, ``/public/../admin``, ``//admin``): the
router must see the path the upstream will act on, and the upstream must receive exactly the
path that was routed. So the path is normalised here and the normalised form is forwarded.

Steps, in order (as Envoy's ``normalize_path`` + ``merge_slashes`` and nginx's defaults):
1. percent-encodings are checked (``%`` followed by two hex digits, else 400); an encoded
   unreserved character (RFC 3986 §2.3: ALPHA DIGIT ``-._~``) is decoded, every other
   encoding is kept with upper-case hex (RFC 3986 §6.2.2.1);
2. an encoded ``/`` or ``\\`` (``%2F``, ``%5C``), and a raw ``\\``, are handled as
   ``escaped_slashes`` says: ``reject`` (400, the default), ``keep`` (left as they are:
   routed and forwarded encoded), or ``unescape`` (decoded to ``/`` before the steps below);
3. runs of ``/`` are merged into one (``merge_slashes``, on by default);
4. ``;`` parameters of segments (``/admin;x=1/``): ``keep`` (the default, as Envoy and nginx:
   part of the segment for matching, forwarded as is), ``strip`` (removed before routing and
   forwarding, what Java servlet containers act on) or ``reject`` (400);
5. dot segments are resolved (RFC 3986 §5.2.4); ``..`` never climbs above the root.
A fragment (``#``) never belongs in a request target: 400. Matching is case-sensitive.

The caller skips the common path (no ``%``, ``\\``, ``//``, ``/.`` or ``;``) with a few substring
checks, so a plain path costs no call.
"""

from __future__ import annotations

import re

from propylon.ir.model import PathNormalizationIR

_HEX = b"0123456789ABCDEFabcdef"
_UNRESERVED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_ESCAPE = re.compile(rb"%(..?)", re.DOTALL)
_SLASHES = re.compile(rb"/{2,}")
_SEGMENT_PARAMS = re.compile(rb";[^/]*")


class PathError(ValueError):
    """The path cannot be accepted; the message says why (sent with a 400)."""


def normalize_path(path: bytes, options: PathNormalizationIR) -> bytes:
    """The normalised form of an origin-form ``path`` (no query); raises ``PathError``."""
    if b"#" in path:
        raise PathError("a fragment in the request target")
    if b"%" in path:
        path = _decode_unreserved(path, options.escaped_slashes)
    if b"\\" in path:
        if options.escaped_slashes == "reject":
            raise PathError("a backslash in the path")
        if options.escaped_slashes == "unescape":
            path = path.replace(b"\\", b"/")
    if options.merge_slashes and b"//" in path:
        path = _SLASHES.sub(b"/", path)
    if b";" in path and options.path_parameters != "keep":
        if options.path_parameters == "reject":
            raise PathError("a ';' parameter in the path")
        path = _SEGMENT_PARAMS.sub(b"", path)
    if b"/." in path:
        path = remove_dot_segments(path)
    return path


def _decode_unreserved(path: bytes, escaped_slashes: str) -> bytes:
    def replace(match: re.Match[bytes]) -> bytes:
        digits = match.group(1)
        if len(digits) != 2 or digits[0] not in _HEX or digits[1] not in _HEX:
            raise PathError("an invalid percent-encoding in the path")
        char = int(digits, 16)
        if char in _UNRESERVED:
            return bytes((char,))
        if char == 0x2F or char == 0x5C:  # "/" and "\"
            if escaped_slashes == "reject":
                raise PathError("an encoded '/' or '\\' in the path")
            if escaped_slashes == "unescape":
                return b"/"
        return b"%" + digits.upper()

    return _ESCAPE.sub(replace, path)


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 §5.2.4 for an absolute path: ``.`` segments go, ``..`` removes the segment
    before it (never above the root); a trailing ``.`` or ``..`` leaves a trailing ``/``."""
    out: list[bytes] = []
    segments = path.split(b"/")[1:]  # an absolute path starts with "/"
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == b".":
            if last:
                out.append(b"")
        elif segment == b"..":
            if out:
                out.pop()
            if last:
                out.append(b"")
        else:
            out.append(segment)
    return b"/" + b"/".join(out)
