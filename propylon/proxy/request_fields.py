"""How the gateway treats each special request field, whatever the client's HTTP version.

Both server codecs (``proxy/h1/server.py``, ``proxy/h2/server.py``) look a lowercased field
name up in ``FIELD_KINDS``; fields not in it are end-to-end and forwarded as they are.
"""

from __future__ import annotations

from typing import Final

KEEP: Final = 0
HOST: Final = 1
LENGTH: Final = 2
CHUNKED: Final = 3
CONNECTION: Final = 4
EXPECT: Final = 5
FORWARDED: Final = 6
DROP: Final = 7
UPGRADE: Final = 8
TE: Final = 9
OWNED: Final = 10
# dropped like DROP; HTTP/1.1 notes it: llhttp reads its keep-alive token like Connection's
PROXY_CONNECTION: Final = 11

FIELD_KINDS: dict[bytes, int] = {
    b"host": HOST,
    b"content-length": LENGTH,
    b"transfer-encoding": CHUNKED,
    b"connection": CONNECTION,
    b"expect": EXPECT,
    b"x-forwarded-for": FORWARDED,
    b"x-forwarded-proto": FORWARDED,
    b"x-forwarded-host": FORWARDED,
    b"forwarded": FORWARDED,
    b"x-forwarded-client-cert": DROP,  # only the gateway may vouch for a client certificate
    # who the client is, as the gateway's auth policies tell upstreams (the default names of
    # apiKey/basicAuth consumerHeaders): taken only from a trusted proxy (a first tier)
    b"x-consumer-name": OWNED,
    b"x-consumer-labels": OWNED,
    # the request id a first tier chose (the session adopts it, see Session.begin)
    b"x-request-id": OWNED,
    b"keep-alive": DROP,
    b"proxy-connection": PROXY_CONNECTION,
    b"proxy-authenticate": DROP,
    b"proxy-authorization": DROP,
    b"te": TE,
    b"trailer": DROP,
    b"upgrade": UPGRADE,
}
