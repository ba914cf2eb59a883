"""The gateway's own network calls, shared by every layer: one HTTP/1.1 client
(``httpclient``) and the TLS client contexts (``tls``). Proxied traffic does not use them
(``propylon.proxy`` has its own pools and codecs); this package imports only ``propylon.ir``.
"""
