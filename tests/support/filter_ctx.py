"""A request as a filter sees it (``filters.base.FilterContext``), for calling a filter's
``on_request`` directly."""

from __future__ import annotations

from typing import Any


class Ctx:
    def __init__(self, method: bytes = b"GET", path: bytes = b"/", query: bytes = b"",
                 headers: list[tuple[bytes, bytes]] | None = None,
                 client_ip: str = "127.0.0.1") -> None:
        self.method, self.path, self.query, self.host = method, path, query, "h"
        self.request_headers = headers or []
        self.client_ip = client_ip
        self.state: dict[str, Any] | None = None
        self.consumer: Any = None
