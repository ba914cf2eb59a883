"""The ``jwt`` policy: bearer tokens verified against files or a JWKS URL.

Token sources are tried in order (``tokenFrom``: a header with an optional prefix, or a
cookie). Checks: the header's ``alg`` is one of ``algorithms`` and matches the key's own
algorithm (no algorithm confusion), signature, ``exp``/``nbf`` with ``clockSkew``, ``iss``,
``aud`` (any of ``audiences``), and ``requiredClaims`` present. ``claimsToHeaders`` copies
claims into upstream headers (client-sent copies are removed first). ``forwardToken: false``
removes the token's header field, or its cookie from the ``cookie`` fields. A source given more
than once (two fields of its header, its cookie twice) is ``400`` with
``error="invalid_request"`` (RFC 6750 §3.1, "repeats the same parameter"): only one copy
would be verified, and the layers behind the gateway could read another.

Fast path: with the key already known, verification is synchronous; a worker also remembers
tokens it has verified (bounded, until their ``exp``), so a repeat token costs a dict look-up
and a clock read. Only a token whose key is not known yet (first request, rotation) waits for a
JWKS fetch (over TLS for an ``https`` URL, verified against ``jwks.caFile`` or the system's
CAs). Failures are ``401`` with ``WWW-Authenticate: Bearer realm=..., error=...``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from typing import Any, Final

import jwt

from propylon.filters._common import trimmed, unauthorized
from propylon.filters._jwks import JwksCache, Key, KeySet, load_key_file
from propylon.filters.base import Filter, FilterContext, FilterEnv, Headers, LocalResponse
from propylon.net.tls import compile_tls
from propylon.policies.auth import JwtPolicy

_VERIFIED_MAX: Final = 10000
# bytes of a token's end that key the verified tokens (its signature's, distinct per token)
_TAIL: Final = 32


class JwtFilter(Filter):
    policy_type = "jwt"
    settings_model = JwtPolicy

    __slots__ = (
        "algorithms", "audiences", "claim_headers", "drop_headers", "issuer", "jwks",
        "missing", "options", "realm", "repeated", "skew", "sources", "static_keys",
        "strip_token", "verified",
    )

    def __init__(self, source: str, settings: JwtPolicy, jwks: JwksCache | None,
                 static_keys: KeySet | None) -> None:
        super().__init__(source)
        self.jwks = jwks
        self.static_keys = static_keys
        self.algorithms = frozenset(settings.algorithms)
        self.issuer = settings.issuer
        self.audiences = list(settings.audiences)
        self.skew = settings.clock_skew
        self.options: dict[str, Any] = {
            "require": ["exp", *settings.required_claims], "verify_aud": bool(self.audiences),
        }
        # (header, prefix, the prefix lower-cased, cookie)
        self.sources: list[tuple[bytes | None, bytes, bytes, bytes | None]] = [
            ((s.header or "").encode() or None, s.prefix.encode(), s.prefix.encode().lower(),
             (s.cookie or "").encode() or None)
            for s in settings.token_from
        ]
        self.strip_token = not settings.forward_token
        self.claim_headers = [(c.claim, c.header.encode()) for c in settings.claims_to_headers]
        self.drop_headers = frozenset(h for _, h in self.claim_headers)
        self.realm = settings.realm
        self.missing = unauthorized(f'Bearer realm="{self.realm}"')
        self.repeated = LocalResponse(400, b"bad request: more than one token\n", [(
            b"www-authenticate",
            f'Bearer realm="{self.realm}", error="invalid_request", '
            'error_description="more than one token"'.encode("latin-1"))])
        # the tail of a verified token -> (the token, its claims, when it expires, the keys'
        # version): a token is hundreds of bytes, which a dictionary would hash on every
        # request; the tail is hashed, and the whole token compared (memcmp) on a hit
        self.verified: dict[bytes, tuple[bytes, dict[str, Any], float, int]] = {}

    @classmethod
    def from_spec(cls, settings: JwtPolicy, source: str, env: FilterEnv) -> JwtFilter:
        jwks = None
        static = None
        j = settings.jwks
        if j is not None:
            fetch = (j.url, j.cache_duration, j.min_refresh_interval, j.timeout)
            field = f"{source}: jwt.jwks.caFile"
            jwks = env.shared(("jwks", *fetch, j.ca_file), lambda: JwksCache(
                *fetch, ssl_context=compile_tls(j.url, j.ca_file, field)))
        else:
            static = KeySet([load_key_file(k.file, k.kid, k.algorithm) for k in settings.keys])
        return cls(source, settings, jwks, static)

    # -- the request path ------------------------------------------------------------------
    def on_request(
        self, ctx: FilterContext
    ) -> LocalResponse | Awaitable[LocalResponse | None] | None:
        token = self.token(ctx)
        if token is None:
            return self.missing
        if isinstance(token, LocalResponse):
            return token
        keys = self.keys()
        hit = self.verified.get(token[-_TAIL:])
        if hit is not None and hit[3] == (keys.version if keys else 0) and hit[0] == token:
            _, claims, expiry, _ = hit
            if time.time() <= expiry:
                self.admit(ctx, claims)
                return None
        try:
            head = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return self.invalid("malformed token")
        alg, kid = str(head.get("alg")), head.get("kid")
        if alg not in self.algorithms:
            return self.invalid("algorithm not allowed")
        key = keys.find(kid, alg) if keys is not None else None
        if key is None and self.jwks is not None:
            fetch = self.jwks.fetch_soon()
            if fetch is not None:
                return self._after_fetch(ctx, token, fetch)
        if key is None:
            return self.invalid("unknown signing key")
        return self.check(ctx, token, key, alg, keys.version if keys else 0)

    async def _after_fetch(self, ctx: FilterContext, token: bytes, fetch: Awaitable[None]
                           ) -> LocalResponse | None:
        await fetch
        keys = self.keys()
        head = jwt.get_unverified_header(token)
        key = keys.find(head.get("kid"), head["alg"]) if keys is not None else None
        if key is None or keys is None:
            return self.invalid("unknown signing key")
        return self.check(ctx, token, key, head["alg"], keys.version)

    def keys(self) -> KeySet | None:
        jwks = self.jwks
        if jwks is None:
            return self.static_keys
        jwks.touch()
        return jwks.keys

    def token(self, ctx: FilterContext) -> bytes | LocalResponse | None:
        """The first source's token; None if no source has one; ``repeated`` when the first
        source present is there more than once."""
        headers = ctx.request_headers
        for name, prefix, lowered, cookie_name in self.sources:
            values = ([v for n, v in headers if n == name] if name
                      else _cookies(headers, cookie_name or b""))
            if not values:
                continue
            if len(values) > 1:
                return self.repeated
            value = values[0]
            if prefix:
                start = value[:len(prefix)]
                if start != prefix and start.lower() != lowered:  # as written, or any case
                    continue
                value = value[len(prefix):]
            value = trimmed(value)
            if value:
                if self.strip_token:
                    if name:
                        headers[:] = [h for h in headers if h[0] != name]
                    else:
                        _drop_cookie(headers, cookie_name or b"")
                return value
        return None

    def check(self, ctx: FilterContext, token: bytes, key: Key, alg: str, version: int
              ) -> LocalResponse | None:
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self.audiences or None,
                issuer=self.issuer, leeway=self.skew, options=self.options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            return self.invalid("token expired")
        except jwt.ImmatureSignatureError:
            return self.invalid("token not valid yet")
        except jwt.InvalidAudienceError:
            return self.invalid("audience not allowed")
        except jwt.InvalidIssuerError:
            return self.invalid("issuer not allowed")
        except jwt.MissingRequiredClaimError as exc:
            return self.invalid(f"claim {exc.claim} missing")
        except jwt.InvalidTokenError:
            return self.invalid("invalid token")
        nbf = claims.get("nbf")
        if nbf is None or float(nbf) <= time.time():  # a not-yet-valid token is not remembered
            if len(self.verified) >= _VERIFIED_MAX:
                self.verified.clear()
            self.verified[token[-_TAIL:]] = (
                token, claims, float(claims["exp"]) + self.skew, version)
        self.admit(ctx, claims)
        return None

    def admit(self, ctx: FilterContext, claims: dict[str, Any]) -> None:
        if not self.claim_headers:
            return
        headers = ctx.request_headers
        headers[:] = [h for h in headers if h[0] not in self.drop_headers]
        for claim, name in self.claim_headers:
            value = claims.get(claim)
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            if "\r" in text or "\n" in text or "\0" in text:
                continue  # never let a claim split a header
            headers.append((name, text.encode("utf-8")))

    def invalid(self, reason: str) -> LocalResponse:
        challenge = (f'Bearer realm="{self.realm}", error="invalid_token", '
                     f'error_description="{reason}"')
        return unauthorized(challenge, b"unauthorized: " + reason.encode() + b"\n")


def _cookies(headers: Headers, name: bytes) -> list[bytes]:
    """Every value of cookie ``name``, in every ``cookie`` field."""
    prefix = name + b"="
    found: list[bytes] = []
    for n, v in headers:
        if n == b"cookie":
            for item in v.split(b";"):
                item = item.strip()
                if item.startswith(prefix):
                    found.append(item[len(prefix):])
    return found


def _drop_cookie(headers: Headers, name: bytes) -> None:
    """Removes cookie ``name`` from every ``cookie`` field (``forwardToken: false``); a field
    left without cookies is removed."""
    prefix = name + b"="
    kept: Headers = []
    for n, v in headers:
        if n == b"cookie":
            items = [i.strip() for i in v.split(b";")]
            rest = [i for i in items if i and not i.startswith(prefix)]
            if len(rest) != len([i for i in items if i]):
                if rest:
                    kept.append((n, b"; ".join(rest)))
                continue
        kept.append((n, v))
    headers[:] = kept
