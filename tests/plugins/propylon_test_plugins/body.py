"""Body filters for the body-phase tests: rewrite (streamed or whole), refuse, and tally.

``testRequestBody`` / ``testResponseBody``: ``find`` is replaced by ``replace`` in each piece
(streamed) or in the whole body (``wholeBody`` > 0: at most that many bytes, in one call);
``append`` is added at the end of the body. ``testRequestBody`` answers 403 when a piece
holds ``refuse``. ``testBodyTally`` only looks (``body_inspect_only``): it counts the bytes of
both bodies, and adds the response's count as a trailer when the response has trailers.
"""

from __future__ import annotations

from pydantic import Field

from propylon.filters import Filter, FilterContext, FilterEnv, Headers, LocalResponse
from propylon.schema import Model

_TALLY = "testBodyTally"  # ctx.state key


class BodyRewriteSettings(Model):
    find: str = ""
    replace: str = ""
    append: str = ""
    whole_body: int = Field(0, ge=0)  # 0: streamed
    refuse: str = ""


class _BodyRewrite(Filter):
    __slots__ = ("append", "find", "refuse", "replace")

    def __init__(self, source: str, settings: BodyRewriteSettings) -> None:
        super().__init__(source)
        self.find = settings.find.encode()
        self.replace = settings.replace.encode()
        self.append = settings.append.encode()
        self.refuse = settings.refuse.encode()

    def rewrite(self, chunk: bytes, end_stream: bool) -> bytes:
        if self.find:
            chunk = chunk.replace(self.find, self.replace)
        return chunk + self.append if end_stream else chunk


class RequestBodyRewrite(_BodyRewrite):
    policy_type = "testRequestBody"
    settings_model = BodyRewriteSettings

    __slots__ = ()

    @classmethod
    def from_spec(cls, settings: BodyRewriteSettings, source: str, env: FilterEnv
                  ) -> RequestBodyRewrite:
        filter_ = cls(source, settings)
        filter_.request_body_buffer = settings.whole_body
        return filter_

    def on_request_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                        ) -> bytes | LocalResponse | None:
        if self.refuse and self.refuse in chunk:
            return LocalResponse(403, b"refused by testRequestBody\n")
        return self.rewrite(chunk, end_stream)


class ResponseBodyRewrite(_BodyRewrite):
    policy_type = "testResponseBody"
    settings_model = BodyRewriteSettings

    __slots__ = ()

    @classmethod
    def from_spec(cls, settings: BodyRewriteSettings, source: str, env: FilterEnv
                  ) -> ResponseBodyRewrite:
        filter_ = cls(source, settings)
        filter_.response_body_buffer = settings.whole_body
        return filter_

    def on_response_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                         ) -> bytes | None:
        return self.rewrite(chunk, end_stream)


class TallySettings(Model):
    trailer: str = "x-body-bytes"


class BodyTally(Filter):
    policy_type = "testBodyTally"
    settings_model = TallySettings

    __slots__ = ("trailer",)

    def __init__(self, source: str, trailer: str) -> None:
        super().__init__(source)
        self.trailer = trailer.encode()
        self.body_inspect_only = True

    @classmethod
    def from_spec(cls, settings: TallySettings, source: str, env: FilterEnv) -> BodyTally:
        return cls(source, settings.trailer)

    def on_request_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                        ) -> bytes | LocalResponse | None:
        return None

    def on_response_body(self, ctx: FilterContext, chunk: bytes, end_stream: bool
                         ) -> bytes | None:
        if ctx.state is None:
            ctx.state = {}
        ctx.state[_TALLY] = ctx.state.get(_TALLY, 0) + len(chunk)
        return None

    def on_trailers(self, ctx: FilterContext, trailers: Headers) -> None:
        seen = ctx.state.get(_TALLY, 0) if ctx.state is not None else 0
        trailers.append((self.trailer, b"%d" % seen))
