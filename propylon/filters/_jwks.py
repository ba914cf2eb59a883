"""Verification keys for the ``jwt`` policy: from files, or from a JWKS URL kept fresh.

``JwksCache`` is one object per worker and JWKS settings (``FilterEnv.shared``), so keys
survive configuration reloads. It never fetches at build time: the first request starts a
background task that fetches the set, then sleeps until the answer's ``Cache-Control:
max-age`` (or ``cacheDuration``) runs out and fetches again. A failed fetch keeps the keys it
had (stale beats none) and retries with a doubling backoff (1s .. 60s). Keys published for
encryption (``use: enc``, ``key_ops`` without ``verify``) are skipped. A token naming an
unknown ``kid`` triggers one immediate fetch (at most one per ``minRefreshInterval``), which is
how a key rotation is picked up before the cache expires; the same bound holds while there are
no keys yet (an endpoint down from the start is not fetched once per request). The task ends
after 10 minutes without a request and starts again with the next one. An ``https`` URL is
fetched over TLS verified against ``caFile`` (or the system's CAs), its host as SNI; a refused
certificate is a failed fetch like any other (logged, stale keys kept, backoff).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from propylon.net.httpclient import HttpClient, HttpError

log = logging.getLogger("propylon.filters.jwt")
_MAX_AGE = re.compile(rb"max-age\s*=\s*(\d+)")
_IDLE_STOP = 600.0
Key = Any  # a prepared key object of PyJWT's algorithm


class KeySet:
    """Keys by ``kid`` (``None`` for keys without one), each with its one algorithm."""

    __slots__ = ("by_kid", "version")

    def __init__(self, keys: list[tuple[str | None, str, Key]], version: int = 0) -> None:
        self.by_kid: dict[str | None, list[tuple[str, Key]]] = {}
        for kid, alg, key in keys:
            self.by_kid.setdefault(kid, []).append((alg, key))
        self.version = version

    def find(self, kid: str | None, alg: str) -> Key | None:
        for key_alg, key in self.by_kid.get(kid, ()):
            if key_alg == alg:
                return key
        if kid is not None:
            return None
        for entries in self.by_kid.values():  # a token without kid: any key of its algorithm
            for key_alg, key in entries:
                if key_alg == alg:
                    return key
        return None


def load_key_file(path: str, kid: str | None, algorithm: str | None) -> tuple[str | None, str, Key]:
    with open(path, "rb") as handle:
        data = handle.read()
    if algorithm == "HS256":
        return kid, "HS256", data.strip()
    public = load_pem_public_key(data)
    if isinstance(public, rsa.RSAPublicKey):
        alg = "RS256"
    elif isinstance(public, ec.EllipticCurvePublicKey):
        alg = "ES256"
    elif isinstance(public, ed25519.Ed25519PublicKey):
        alg = "EdDSA"
    else:
        raise ValueError(f"{path}: unsupported key type")
    if algorithm is not None and algorithm != alg:
        raise ValueError(f"{path}: a {alg} key cannot verify {algorithm}")
    return kid, alg, public


def parse_jwks(body: bytes, version: int) -> KeySet:
    keys: list[tuple[str | None, str, Key]] = []
    data = json.loads(body)
    items = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("the answer is not a JWK set (an object with a \"keys\" list)")
    for item in items:
        if not _for_signatures(item):
            continue
        try:
            jwk = jwt.PyJWK(item)
        except (jwt.PyJWKError, jwt.InvalidKeyError, KeyError, ValueError):
            continue  # an unusable key (unknown type, a private key use...) is skipped
        alg = item.get("alg") or jwk.algorithm_name
        if alg in ("RS256", "ES256", "EdDSA", "HS256"):
            keys.append((jwk.key_id, alg, jwk.key))
    return KeySet(keys, version)


def _for_signatures(item: Any) -> bool:
    """Whether a JWK may verify signatures (RFC 7517 §4.2, §4.3): not one published for
    encryption (``"use": "enc"``) or whose ``key_ops`` leave out ``verify``."""
    if not isinstance(item, dict):
        return False
    use = item.get("use")
    if use is not None and use != "sig":
        return False
    ops = item.get("key_ops")
    return ops is None or (isinstance(ops, list) and "verify" in ops)


def max_age(value: bytes | None) -> float | None:
    if value is None:
        return None
    if b"no-store" in value or b"no-cache" in value:
        return 0.0
    match = _MAX_AGE.search(value)
    return float(match.group(1)) if match else None


class JwksCache:
    def __init__(self, url: str, default_ttl: float, min_refresh: float, timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.target = (url.split("/", 3)[3:] or [""])[0]
        self.client = HttpClient(url, max_connections=2, ssl_context=ssl_context)
        self.default_ttl = default_ttl
        self.min_refresh = min_refresh
        self.timeout = timeout
        self.keys: KeySet | None = None
        self.expires = 0.0
        self.last_fetch = float("-inf")
        self.last_used = 0.0
        self.failures = 0
        self.inflight: asyncio.Task[None] | None = None
        self.runner: asyncio.Task[None] | None = None

    def touch(self) -> None:
        """Called per request: keeps (or starts) the background refresher."""
        self.last_used = time.monotonic()
        if self.runner is None:
            self.runner = asyncio.get_running_loop().create_task(self._run())

    def fetch_soon(self) -> asyncio.Task[None] | None:
        """A fetch to wait for (an unknown kid), or None if one ran too recently. Also without
        keys: with the endpoint down, each token would otherwise start (and wait for) a fetch
        of its own; the background refresher keeps retrying with its backoff."""
        if self.inflight is not None:
            return self.inflight
        if time.monotonic() - self.last_fetch < self.min_refresh:
            return None
        return self._start_fetch()

    def _start_fetch(self) -> asyncio.Task[None]:
        task = self.inflight = asyncio.get_running_loop().create_task(self._fetch())
        return task

    async def _run(self) -> None:
        try:
            while time.monotonic() - self.last_used < _IDLE_STOP:
                if time.monotonic() >= self.expires:
                    await asyncio.shield(self.inflight or self._start_fetch())
                await asyncio.sleep(max(0.05, self.expires - time.monotonic()))
        finally:
            self.runner = None

    async def _fetch(self) -> None:
        self.last_fetch = time.monotonic()
        try:
            response = await self.client.request(
                b"GET", b"/" + self.target.encode(), [(b"accept", b"application/json")],
                self.timeout)
            if response.status != 200:
                raise HttpError(f"status {response.status}")
            keys = parse_jwks(response.body, (self.keys.version + 1) if self.keys else 1)
        except (HttpError, ValueError) as exc:
            self.failures += 1
            backoff = min(60.0, 2.0 ** (self.failures - 1))
            self.expires = time.monotonic() + backoff
            log.warning("JWKS fetch from %s failed (%s); keeping %s keys, retry in %.0fs",
                        self.url, exc, "stale" if self.keys else "no", backoff)
            return
        finally:
            self.inflight = None
        self.failures = 0
        age = max_age(response.header(b"cache-control"))
        ttl = self.default_ttl if age is None else age
        self.expires = time.monotonic() + min(max(ttl, self.min_refresh), 86400.0)
        self.keys = keys
