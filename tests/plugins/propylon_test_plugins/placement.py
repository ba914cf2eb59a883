"""Two filters that say where they run: before ``auth`` and (by default) after ``headers``.

Each appends its name to the request field ``x-plugin-order`` just before the request goes
upstream (where ``headers`` edits it too), or answers ``answer`` itself when configured.
"""

from __future__ import annotations

from propylon.filters import Filter, FilterContext, FilterEnv, LocalResponse
from propylon.schema import Model


class StampSettings(Model):
    answer: int | None = None


class _Stamp(Filter):
    settings_model = StampSettings

    __slots__ = ("answer", "stamp")

    def __init__(self, source: str, answer: int | None) -> None:
        super().__init__(source)
        self.stamp = (b"x-plugin-order", self.policy_type.encode())
        self.answer = None if answer is None else LocalResponse(answer, b"stamped\n")

    @classmethod
    def from_spec(cls, settings: StampSettings, source: str, env: FilterEnv) -> _Stamp:
        return cls(source, settings.answer)

    def on_request(self, ctx: FilterContext) -> LocalResponse | None:
        return self.answer

    def on_upstream_request(self, ctx: FilterContext) -> None:
        ctx.request_headers.append(self.stamp)


class StampBeforeAuth(_Stamp):
    policy_type = "testStampBeforeAuth"
    before = "auth"

    __slots__ = ()


class StampAfterHeaders(_Stamp):
    policy_type = "testStampAfterHeaders"
    sees_consumers = False  # never reads them: kept on a Consumer change

    __slots__ = ()
