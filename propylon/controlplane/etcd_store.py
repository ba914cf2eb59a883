"""The shared store: etcd v3 through its JSON gateway (``/v3/kv/*``, ``/v3/watch``).

Several control-plane replicas on one etcd see the same state; each watches the resource
prefix and re-reads on every change, whichever replica made it. A resource's version is its
etcd ``mod_revision``; a write with an expected version is a transaction comparing it, so a
stale write is refused by etcd itself. No home-made replication: etcd is the source of truth.

Keys: ``/propylon/resources/{Kind}/{namespace}/{name}``,
``/propylon/fleet/{gateway namespace}/{gateway name}/{proxy id}`` and
``/propylon/rollouts/{gateway namespace}/{gateway name}``, values JSON;
``/propylon/stable-ir/{gateway namespace}/{gateway name}``: the stable version, a newline,
then its IR text compressed with zlib (bounded by etcd's ``--max-request-bytes``). Rollout
records are written with a transaction comparing their ``mod_revision``, so replicas sharing
the store cannot overwrite a record another one changed since they read it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import threading
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from propylon.controlplane.resources import DecodedData, StoredResource
from propylon.controlplane.store import ABSENT, BatchTooLarge, BatchWrite, Conflict, StoreError
from propylon.net import httpclient
from propylon.runtime.gc_pause import gc_paused

log = logging.getLogger("propylon.controlplane")

_RESOURCES = "/propylon/resources/"
_FLEET = "/propylon/fleet/"
_ROLLOUTS = "/propylon/rollouts/"
_STABLE_IR = "/propylon/stable-ir/"
_TIMEOUT = 5.0
# etcd's answers to a transaction over its --max-txn-ops (default 128) or
# --max-request-bytes (default 1.5 MiB)
_TOO_LARGE = (b"too many operations in txn request", b"request is too large")
_FLEET_TXN_OPS = 100  # fleet records per transaction: under that default of 128


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> str:
    """The first key after every key starting with ``prefix`` (etcd's range_end)."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def _key(kind: str, namespace: str, name: str) -> str:
    return f"{_RESOURCES}{kind}/{namespace}/{name}"


class EtcdError(StoreError):
    pass


class EtcdStore:
    def __init__(self, base: str) -> None:
        self._base = base
        self._decoded = DecodedData()
        self._decoding = threading.Lock()  # ``_decoded`` is read and written on threads

    @classmethod
    async def open(cls, url: str) -> EtcdStore:
        parts = urlsplit(url)
        scheme = "https" if parts.scheme == "etcds" else "http"
        store = cls(f"{scheme}://{parts.netloc}")
        await store._call("kv/range", {"key": _b64(_RESOURCES), "limit": 1})
        return store

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = await httpclient.request(
                "POST", f"{self._base}/v3/{path}", body=json.dumps(body).encode(),
                headers={"content-type": "application/json"}, timeout=_TIMEOUT)
        except httpclient.HttpError as exc:
            raise EtcdError(f"etcd unreachable: {exc}") from exc
        if answer.status == 400 and any(m in answer.body for m in _TOO_LARGE):
            raise BatchTooLarge(
                f"etcd refuses this transaction ({answer.body[:200]!r}): apply fewer resources "
                "at once, or raise etcd's --max-txn-ops / --max-request-bytes")
        if answer.status != 200:
            raise EtcdError(f"etcd {path}: HTTP {answer.status}: {answer.body[:200]!r}")
        data: dict[str, Any] = answer.json() or {}
        return data

    async def _range(self, prefix: str) -> list[dict[str, Any]]:
        data = await self._call("kv/range", {"key": _b64(prefix), "range_end": prefix_end(prefix)})
        kvs: list[dict[str, Any]] = data.get("kvs", [])
        return kvs

    # -- resources -----------------------------------------------------------------------
    async def get(self, kind: str, namespace: str, name: str) -> StoredResource | None:
        data = await self._call("kv/range", {"key": _b64(_key(kind, namespace, name))})
        kvs = data.get("kvs", [])
        return self._item(kvs[0]) if kvs else None

    async def list_resources(self, kind: str | None = None) -> list[StoredResource]:
        prefix = f"{_RESOURCES}{kind}/" if kind else _RESOURCES
        kvs = await self._range(prefix)
        # 10,000 Routes: most of a second of JSON, on a thread rather than the event loop
        return await asyncio.to_thread(self._items, kvs, kind is None)

    def _items(self, kvs: list[dict[str, Any]], everything: bool) -> list[StoredResource]:
        with self._decoding, gc_paused():
            items = sorted((self._item(kv) for kv in kvs),
                           key=lambda r: (r.kind, r.namespace, r.name))
            if everything:
                self._decoded.keep_only(items)
            return items

    def _item(self, kv: dict[str, Any]) -> StoredResource:
        kind, namespace, name = _unb64(kv["key"]).removeprefix(_RESOURCES).split("/", 2)
        return self._decoded.item(kind, namespace, name, str(kv["mod_revision"]),
                                  _unb64(kv["value"]))

    async def put(self, kind: str, namespace: str, name: str, data: dict[str, Any],
                  expected: str | None) -> StoredResource:
        key = _b64(_key(kind, namespace, name))
        put = {"request_put": {"key": key, "value": _b64(json.dumps(data))}}
        answer = await self._txn(key, expected, put, f"{kind} {namespace}/{name}")
        return StoredResource(kind, namespace, name, data, str(answer["header"]["revision"]))

    async def delete(self, kind: str, namespace: str, name: str, expected: str | None) -> bool:
        key = _b64(_key(kind, namespace, name))
        delete = {"request_delete_range": {"key": key}}
        answer = await self._txn(key, expected, delete, f"{kind} {namespace}/{name}")
        responses = answer.get("responses", [{}])
        return int(responses[0].get("response_delete_range", {}).get("deleted", 0)) > 0

    async def write_batch(self, writes: Sequence[BatchWrite]) -> str:
        """One etcd transaction: a compare per write with an ``expected``, then every put
        and delete; etcd gives all of them one revision."""
        compare, ops = [], []
        for w in writes:
            key = _b64(_key(w.kind, w.namespace, w.name))
            if w.expected == ABSENT:
                compare.append({"key": key, "target": "CREATE", "result": "EQUAL",
                                "create_revision": "0"})
            elif w.expected is not None:
                compare.append({"key": key, "target": "MOD", "result": "EQUAL",
                                "mod_revision": w.expected})
            ops.append({"request_delete_range": {"key": key}} if w.data is None else
                       {"request_put": {"key": key, "value": _b64(json.dumps(w.data))}})
        answer = await self._call("kv/txn", {"compare": compare, "success": ops})
        if not answer.get("succeeded"):
            raise Conflict("a resource of the batch changed meanwhile")
        return str(answer["header"]["revision"])

    async def _txn(self, key: str, expected: str | None, op: dict[str, Any],
                   what: str) -> dict[str, Any]:
        compare = [] if expected is None else [
            {"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": expected}
        ]
        answer = await self._call("kv/txn", {"compare": compare, "success": [op]})
        if not answer.get("succeeded"):
            raise Conflict(f"{what}: resourceVersion {expected} is stale")
        return answer

    # -- fleet ---------------------------------------------------------------------------
    async def put_fleet(self, records: Mapping[tuple[str, str], dict[str, Any]]) -> None:
        puts = [{"request_put": {"key": _b64(f"{_FLEET}{gateway}/{proxy}"),
                                 "value": _b64(json.dumps(record))}}
                for (gateway, proxy), record in records.items()]
        for start in range(0, len(puts), _FLEET_TXN_OPS):
            await self._call("kv/txn", {"success": puts[start:start + _FLEET_TXN_OPS]})

    async def list_fleet(self) -> dict[str, dict[str, dict[str, Any]]]:
        fleet: dict[str, dict[str, dict[str, Any]]] = {}
        for kv in await self._range(_FLEET):
            namespace, name, proxy = _unb64(kv["key"]).removeprefix(_FLEET).split("/", 2)
            fleet.setdefault(f"{namespace}/{name}", {})[proxy] = json.loads(_unb64(kv["value"]))
        return fleet

    # -- rollouts (outside the watched resource prefix: no translation) ------------------
    async def list_rollouts(self) -> dict[str, tuple[dict[str, Any], str]]:
        return {_unb64(kv["key"]).removeprefix(_ROLLOUTS):
                (json.loads(_unb64(kv["value"])), str(kv["mod_revision"]))
                for kv in await self._range(_ROLLOUTS)}

    async def put_rollout(self, gateway: str, record: dict[str, Any] | None,
                          expected: str | None) -> bool:
        key = _b64(f"{_ROLLOUTS}{gateway}")
        compare = [] if expected is None else [
            {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            if expected == ABSENT else
            {"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": expected}]
        ops: list[dict[str, Any]] = (
            [{"request_delete_range": {"key": key}},
             {"request_delete_range": {"key": _b64(f"{_STABLE_IR}{gateway}")}}]
            if record is None else
            [{"request_put": {"key": key, "value": _b64(json.dumps(record))}}])
        answer = await self._call("kv/txn", {"compare": compare, "success": ops})
        return bool(answer.get("succeeded"))

    async def put_stable_ir(self, gateway: str, version: str, text: str) -> None:
        packed = await asyncio.to_thread(zlib.compress, text.encode(), 6)
        value = base64.b64encode(version.encode() + b"\n" + packed).decode()
        await self._call("kv/put", {"key": _b64(f"{_STABLE_IR}{gateway}"), "value": value})

    async def get_stable_ir(self, gateway: str) -> tuple[str, str] | None:
        data = await self._call("kv/range", {"key": _b64(f"{_STABLE_IR}{gateway}")})
        kvs = data.get("kvs", [])
        if not kvs:
            return None
        version, _, packed = base64.b64decode(kvs[0]["value"]).partition(b"\n")
        text = await asyncio.to_thread(zlib.decompress, packed)
        return version.decode(), text.decode()

    # -- changes -------------------------------------------------------------------------
    async def changes(self) -> AsyncIterator[None]:
        """Once as soon as the watch is created (events written before it may be newer than
        the caller's last listing), then once per batch of resource events; once more after
        every reconnection, since events may have been missed while the watch was down."""
        delay = 0.2
        while True:
            try:
                async for _ in self._watch():
                    delay = 0.2
                    yield None
            except (httpclient.HttpError, EtcdError, ValueError) as exc:
                log.warning("etcd watch interrupted: %s", exc)
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 5.0)
            yield None

    async def _watch(self) -> AsyncIterator[None]:
        body = {"create_request": {"key": _b64(_RESOURCES), "range_end": prefix_end(_RESOURCES)}}
        async with httpclient.stream("POST", f"{self._base}/v3/watch",
                                     body=json.dumps(body).encode(), timeout=10.0) as answer:
            if answer.status != 200:
                raise EtcdError(f"etcd watch: HTTP {answer.status}")
            buffer = b""
            async for piece in answer.body():
                buffer += piece
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    result = json.loads(line).get("result", {}) if line.strip() else {}
                    # created: watching from now, what was written before may be newer
                    # than the caller's last listing
                    if result.get("created") or result.get("events"):
                        yield None

    async def close(self) -> None:
        return None
