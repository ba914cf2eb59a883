"""``POST /cache/purge`` on the admin listener: drops cached answers by key prefix or by tag.

The rule is given as a query (``?prefix=shop.test/api/`` or ``?tag=product-42``) or as a JSON
body (``{"prefix": ...}`` / ``{"tag": ...}``); exactly one of the two. Keys are
``host`` + path + ``?query`` (docs/policies.md, *cache*). Memory stores live in the workers:
the rule goes into the proxy's purge log, which every worker applies before its next lookup.
Redis stores named by the installed configuration's ``cache`` policies are purged from here,
and their count is in the answer.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs

from propylon import ir
from propylon.filters._cache_store import RedisStore, append_purge
from propylon.policies.body import CachePolicy
from propylon.policies.table import POLICY_TYPES

if TYPE_CHECKING:
    from propylon.proxy.supervisor import Supervisor

_MAX_BODY = 4096
_JSON = b"application/json"


async def purge_request(supervisor: Supervisor, reader: asyncio.StreamReader,
                        head_lines: list[bytes], target: bytes) -> tuple[int, bytes, bytes]:
    rule, error = await _rule(reader, head_lines, target)
    if rule is None:
        return 400, _json({"error": error}), _JSON
    append_purge(rule, os.getpid())
    redis_counts: dict[str, int | str] = {}
    for address, prefix, timeout, *login in _redis_stores(supervisor):
        store = RedisStore(address, prefix, timeout, *login)
        try:
            redis_counts[f"{address}/{prefix}"] = await store.purge(rule)
        except Exception as exc:  # an unreachable Redis is reported, not fatal
            redis_counts[f"{address}/{prefix}"] = f"failed: {exc!r}"
        finally:
            await store.client.aclose()
    return 200, _json({"purged": rule, "workers": "before their next lookup",
                       "redis": redis_counts}), _JSON


async def _rule(reader: asyncio.StreamReader, head_lines: list[bytes], target: bytes
                ) -> tuple[dict[str, str] | None, str]:
    query = parse_qs(target.partition(b"?")[2].decode("latin-1"))
    given: dict[str, Any] = {k: v[0] for k, v in query.items() if k in ("prefix", "tag")}
    length = next((line.split(b":", 1)[1].strip() for line in head_lines[1:]
                   if line[:15].lower() == b"content-length:"), b"0")
    if not length.isdigit() or int(length) > _MAX_BODY:
        return None, f"the body must be JSON of at most {_MAX_BODY} bytes"
    if int(length):
        try:
            body = json.loads(await asyncio.wait_for(reader.readexactly(int(length)), 10))
        except (ValueError, asyncio.IncompleteReadError, TimeoutError):
            return None, 'the body must be {"prefix": "..."} or {"tag": "..."}'
        if not isinstance(body, dict):
            return None, 'the body must be {"prefix": "..."} or {"tag": "..."}'
        given.update(body)
    rule = {k: v for k, v in given.items() if k in ("prefix", "tag")}
    if len(rule) != 1 or not all(isinstance(v, str) and v for v in rule.values()) or (
            len(given) != len(rule)):
        return None, "give exactly one of prefix, tag (a non-empty string)"
    return rule, ""


# address, prefix, timeout, then username, password and why it could not be read
StoreKey = tuple[str, str, float, str | None, str | None, str | None]


def _redis_stores(supervisor: Supervisor) -> set[StoreKey]:
    found: set[StoreKey] = set()
    snapshot = supervisor.snapshot
    if snapshot is None:
        return found

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            spec = node.get("spec")
            if node.get("type") == "cache" and isinstance(spec, dict) and (
                    spec.get("store") == "redis"):
                redis = cast(CachePolicy, POLICY_TYPES["cache"].settings_from(spec)).redis
                found.add((redis.address, redis.prefix, redis.timeout, *redis.login()))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(ir.to_data(snapshot))
    return found


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=1).encode() + b"\n"
