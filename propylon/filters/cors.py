"""The ``cors`` policy: the gateway answers preflights and adds CORS headers to responses.

Origins are exact (``https://app.example.com``), patterns with ``*`` standing for one or more
host characters (``https://*.example.com``), or ``"*"`` for any origin. A preflight
(``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is always answered here:
``204`` with the allow headers when origin, method and requested headers are allowed, ``403``
without them otherwise (the browser then blocks the call). On other requests from an allowed
origin, ``on_response`` adds ``Access-Control-Allow-Origin`` (and credentials, exposed headers).
Every answer carries ``Vary: Origin`` unless the policy allows ``"*"`` without credentials.
"""

from __future__ import annotations

import re

from propylon.filters._common import header, state
from propylon.filters.base import Filter, FilterContext, FilterEnv, Headers, LocalResponse
from propylon.policies.traffic import CorsPolicy

_ORIGIN = "cors.origin"  # ctx.state key: the allowed Origin value to echo


def compile_origins(patterns: list[str]) -> tuple[frozenset[bytes], re.Pattern[bytes] | None, bool]:
    """(exact origins, one regex for the patterns, any origin allowed)."""
    exact = frozenset(p.encode() for p in patterns if "*" not in p)
    wild = [p for p in patterns if "*" in p and p != "*"]
    regex = None
    if wild:
        parts = ["[^/]+".join(re.escape(piece) for piece in p.split("*")) for p in wild]
        regex = re.compile("|".join(f"(?:{p})" for p in parts).encode(), re.IGNORECASE)
    return exact, regex, "*" in patterns


class CorsFilter(Filter):
    policy_type = "cors"
    settings_model = CorsPolicy

    __slots__ = (
        "allow_headers",
        "allow_headers_value",
        "allow_methods_value",
        "any_origin",
        "credentials",
        "exact",
        "expose",
        "max_age",
        "methods",
        "regex",
        "rejected",
        "vary",
    )

    def __init__(self, source: str, settings: CorsPolicy) -> None:
        super().__init__(source)
        self.exact, self.regex, self.any_origin = compile_origins(settings.allow_origins)
        methods = settings.allow_methods  # upper-case (Method)
        self.methods = frozenset(m.encode() for m in methods)
        self.allow_methods_value = ", ".join(methods).encode()
        headers = settings.allow_headers  # lower-case (HeaderName)
        self.allow_headers = frozenset(h.encode() for h in headers)
        self.allow_headers_value = ", ".join(headers).encode()
        self.expose = ", ".join(settings.expose_headers).encode()
        self.credentials = settings.allow_credentials
        max_age = settings.max_age
        self.max_age = str(int(max_age)).encode() if max_age is not None else None
        self.vary = not (self.any_origin and not self.credentials)
        # no Vary here: every local answer goes through ``on_response``, which adds it (a
        # preflight leaves no origin in the state), so it would be sent twice
        self.rejected = LocalResponse(403, b"CORS preflight rejected\n")

    @classmethod
    def from_spec(cls, settings: CorsPolicy, source: str, env: FilterEnv) -> CorsFilter:
        return cls(source, settings)

    def origin_allowed(self, origin: bytes) -> bool:
        if self.any_origin or origin in self.exact:
            return True
        return self.regex is not None and self.regex.fullmatch(origin) is not None

    def _allow_origin(self, origin: bytes) -> bytes:
        return b"*" if self.any_origin and not self.credentials else origin

    def on_request(self, ctx: FilterContext) -> LocalResponse | None:
        headers = ctx.request_headers
        origin = header(headers, b"origin")
        if origin is None:
            return None
        allowed = self.origin_allowed(origin.lower())
        if ctx.method == b"OPTIONS":
            wanted = header(headers, b"access-control-request-method")
            if wanted is not None:
                return self.preflight(origin, allowed, wanted, headers)
        if allowed:
            state(ctx)[_ORIGIN] = origin
        return None

    def preflight(
        self, origin: bytes, allowed: bool, method: bytes, headers: Headers
    ) -> LocalResponse:
        if not allowed or method.upper() not in self.methods:
            return self.rejected
        asked = header(headers, b"access-control-request-headers")
        if asked:
            names = [n.strip().lower() for n in asked.split(b",") if n.strip()]
            if any(n not in self.allow_headers for n in names):
                return self.rejected
        out: Headers = [
            (b"access-control-allow-origin", self._allow_origin(origin)),
            (b"access-control-allow-methods", self.allow_methods_value),
        ]
        if self.allow_headers_value:
            out.append((b"access-control-allow-headers", self.allow_headers_value))
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        if self.max_age is not None:
            out.append((b"access-control-max-age", self.max_age))
        return LocalResponse(204, b"", out)  # Vary: added by ``on_response``

    def on_response(self, ctx: FilterContext, status: int, headers: Headers) -> None:
        data = ctx.state
        origin = data.get(_ORIGIN) if data is not None else None
        if origin is None:
            if self.vary:
                headers.append((b"vary", b"Origin"))
            return
        if any(n == b"access-control-allow-origin" for n, _ in headers):
            return  # a preflight answered here, or the upstream handles CORS itself
        headers.append((b"access-control-allow-origin", self._allow_origin(origin)))
        if self.credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        if self.expose:
            headers.append((b"access-control-expose-headers", self.expose))
        if self.vary:
            headers.append((b"vary", b"Origin"))
