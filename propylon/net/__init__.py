"""The gateway's own network calls, shared by every layer: one HTTP/1.1 client
(``httpclient``), the TLS client contexts (``tls``) and the reading of a client address
written as text (``addresses``). Proxied traffic does not use them
(``propylon.proxy`` has its own pools and codecs); this package imports only ``propylon.ir``.
"""
