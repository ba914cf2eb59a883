"""The HTTP/1.1 codec: the client side (``server``: requests in, responses out), the upstream
side (``client``: requests out, responses in) and the one place that decides body framing
(``framing``). The session above it sees heads, body chunks and trailers, never wire bytes.
"""
