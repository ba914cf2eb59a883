"""``jsonRewrite``: adds response header fields and edits JSON response bodies.

Config (``plugins: [{name: jsonRewrite, config: {...}}]``):
- ``set``: ``{path: value}``, a dotted path into the body's top-level object and the JSON
  value to put there (intermediate objects are created); ``remove``: paths to delete. Removals
  run first, then the settings.
- ``responseHeaders``: ``{name: value}`` fields added to every response of the route.
- ``maxBodySize``: the whole response body is collected before the edit, at most this many
  bytes (default 1 MiB); a larger one is answered 502 by the gateway.

Only a ``application/json`` (or ``+json``) body whose top level is an object is edited; any
other body (text, an array, compressed, invalid JSON) goes through as it came. The gateway
sends the edited body with its new ``Content-Length``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import Field

from propylon.filters import Filter, FilterContext, FilterEnv, Headers
from propylon.schema import HeaderName, HeaderValue, Model

MiB = 1024 * 1024
_NOT_JSON = "jsonRewrite: not json"  # ctx.state key: this response is passed on as it is


class JsonRewriteSettings(Model):
    set_fields: dict[str, Any] = Field(default_factory=dict, alias="set")
    remove: list[str] = Field(default_factory=list)
    response_headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    max_body_size: int = Field(MiB, ge=1, le=64 * MiB)


class JsonRewriteFilter(Filter):
    policy_type = "jsonRewrite"
    settings_model = JsonRewriteSettings
    after = "headers"  # the default place, said out loud

    __slots__ = ("additions", "removals", "response_headers")

    def __init__(self, source: str, settings: JsonRewriteSettings) -> None:
        super().__init__(source)
        self.removals = tuple(path.split(".") for path in settings.remove)
        self.additions = tuple((path.split("."), value)
                               for path, value in settings.set_fields.items())
        self.response_headers = tuple((name.encode("latin-1"), value.encode("latin-1"))
                                      for name, value in settings.response_headers.items())
        self.response_body_buffer = settings.max_body_size  # the whole body, at most this

    @classmethod
    def from_spec(cls, settings: JsonRewriteSettings, source: str, env: FilterEnv
                  ) -> JsonRewriteFilter:
        return cls(source, settings)

    def on_response(self, ctx: FilterContext, status: int, headers: Headers) -> None:
        headers.extend(self.response_headers)
        if not is_json(headers):
            if ctx.state is None:
                ctx.state = {}
            ctx.state[_NOT_JSON] = True

    def on_response_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                         ) -> bytes | None:
        if ctx.state is not None and _NOT_JSON in ctx.state:
            return None
        try:
            doc = json.loads(chunk)
        except (ValueError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        for path in self.removals:
            remove_path(doc, path)
        for path, value in self.additions:
            set_path(doc, path, copy.deepcopy(value))  # the settings are never shared
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def is_json(headers: Headers) -> bool:
    for name, value in headers:
        if name == b"content-type":
            media = value.partition(b";")[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def set_path(doc: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        inner = doc.setdefault(key, {})
        if not isinstance(inner, dict):
            return  # the path goes through a value that is not an object: left alone
        doc = inner
    doc[path[-1]] = value


def remove_path(doc: dict[str, Any], path: list[str]) -> None:
    for key in path[:-1]:
        inner = doc.get(key)
        if not isinstance(inner, dict):
            return
        doc = inner
    doc.pop(path[-1], None)
