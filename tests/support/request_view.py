"""A request as the router's conditions read it (``runtime.router.RequestView``), from plain
dictionaries: for tests that match requests against a router without a connection."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Req:
    headers: dict[str, str] = field(default_factory=dict)  # names lower-case
    query: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def query_param(self, name: str) -> str | None:
        return self.query.get(name)
