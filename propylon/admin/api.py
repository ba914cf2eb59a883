"""The control plane's REST API (DESIGN §3), sans-IO: ``ControlAPI.handle(Request) -> Reply``.

The dashboard, ``/ui/...``, is ``propylon.controlplane.ui`` (same token, kept in a cookie by
its login page; the cookie is never accepted here).
Open routes, for Kubernetes probes and Prometheus (no token; nothing secret in them):
  GET    /healthz                                   200 once translated, else 503
  GET    /metrics                                   Prometheus / OpenMetrics exposition
                                                    (``?name[]=`` for those series only)
Routes that need ``authorization: Bearer TOKEN`` (else 401):
  GET    /openapi.json
  GET    /v1/resources/{kind}                       list one kind
  GET    /v1/resources/{kind}/{namespace}/{name}
  PUT    /v1/resources/{kind}/{namespace}/{name}    create or replace (422 schema, 409 stale)
  DELETE /v1/resources/{kind}/{namespace}/{name}    ?resourceVersion=N (409 if stale)
  POST   /v1/apply                                  a batch, all or nothing (docs/controlplane.md)
  GET    /v1/status                                 statuses and fleets
  GET    /v1/gateways/{namespace}/{name}/ir         long-poll: ?after=VERSION&wait=S (a delta
                                                    for ?delta=SCHEMA: controlplane/ir_deltas.py)
  POST   /v1/gateways/{namespace}/{name}/reports    a proxy's ACK, NACK or HEALTH report
  GET    /v1/gateways/{namespace}/{name}/rollout    the Gateway's progressive rollout
  POST   /v1/gateways/{namespace}/{name}/rollout/{pause|resume|abort}   (409 if it does not
                                                    apply to the rollout's phase)
Answers are JSON; resources are shown with secrets redacted.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from propylon.admin.openapi import openapi_document
from propylon.controlplane.batch import (
    Batch,
    BatchConflict,
    BatchInvalid,
    Planned,
    plan_batch,
    read_batch,
    writes_of,
)
from propylon.controlplane.httpd import Reply, Request
from propylon.controlplane.ir_deltas import BASE_HEADER, DELTA_CONTENT_TYPE, reads_deltas
from propylon.controlplane.ir_forms import FORMS
from propylon.controlplane.resources import (
    KIND_OF_PATH,
    Invalid,
    StoredResource,
    answer,
    normalized,
    strip_server_fields,
    validate,
)
from propylon.controlplane.rollout import RolloutRefused
from propylon.controlplane.state import ControlState, answers_text
from propylon.controlplane.store import BatchTooLarge, Conflict, StoreError
from propylon.controlplane.ui import Dashboard, Explainer
from propylon.ir import schema
from propylon.ir.jsontext import json_sorted
from propylon.schema import is_object_name

log = logging.getLogger("propylon.controlplane")

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_WAIT = 60.0
DEFAULT_WAIT = 30.0
ROLLOUT_ACTIONS = ("pause", "resume", "abort")
APPLY_ATTEMPTS = 3  # plans of one batch tried when concurrent writes make the store refuse


def _json(status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    body = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
    return Reply(status, body, headers=headers or [])


def _listing(kind: str, items: Sequence[StoredResource]) -> Reply:
    """A kind's resources, written compactly (indenting is Python's own encoder, which took
    1.5 s for 10,000 Routes where the C one takes a tenth of that): the text
    ``json_sorted({"items": ..., "kind": kind})`` gives, the items written one at a time."""
    text = '{"items":' + answers_text(items) + ',"kind":' + json_sorted(kind) + "}"
    return Reply(200, text.encode() + b"\n", headers=[])


def _error(status: int, message: str, reasons: list[str] | None = None) -> Reply:
    data: dict[str, Any] = {"error": message}
    if reasons is not None:
        data["reasons"] = reasons
    return _json(status, data)


@dataclass
class ControlAPI:
    state: ControlState
    token: str
    secure: bool = False  # served over TLS (the dashboard's cookie gets Secure)
    explainer: Explainer | None = None  # the dashboard's explain (propylon.cli.control)

    def __post_init__(self) -> None:
        self.ui = Dashboard(self.state, self.token, self.secure, explainer=self.explainer)

    async def handle(self, request: Request) -> Reply:
        parts = [p for p in request.path.split("/") if p]
        if parts in (["healthz"], ["metrics"]):
            return _only(request.method, "GET") or await self._open(parts[0], request)
        if (parts == ["ui"] and not request.path.endswith("/")) or parts == []:
            return Reply(303, headers=[("location", "/ui/")])
        if parts[:1] == ["ui"]:
            return await self.ui.handle(request)
        if not self._authorized(request):
            return _json(401, {"error": "missing or wrong bearer token"},
                         [("www-authenticate", "Bearer")])
        try:
            return await self._route(request, parts)
        except Conflict as exc:
            return _error(409, str(exc))
        except Invalid as exc:
            return _error(422, "invalid resource", exc.reasons)
        except BatchInvalid as exc:
            return _batch_error(422, "invalid batch: nothing was written", exc.reasons,
                                [e.to_json() for e in exc.errors])
        except BatchConflict as exc:
            return _batch_error(409, "stale resourceVersion: nothing was written",
                                [str(exc)], [e.to_json() for e in exc.errors])
        except BatchTooLarge as exc:
            return _error(413, str(exc))
        except RolloutRefused as exc:
            return _error(409, str(exc))
        except (StoreError, sqlite3.Error) as exc:
            log.error("store error: %s", exc)
            return _error(503, f"store unavailable: {exc}")

    async def _open(self, path: str, request: Request) -> Reply:
        if path == "healthz":
            ready = self.state.ready
            return _json(200 if ready else 503, {"status": "ok" if ready else "starting"})
        try:
            fleet = await self.state.fleet()
        except Exception as exc:  # the store is away: the counters still tell something
            log.warning("metrics without fleet records: %s", exc)
            fleet = []
        body, content_type = self.state.metrics.render(
            fleet, self.state.ready, request.headers.get("accept", ""),
            request.repeated.get("name[]", ()))
        return Reply(200, body, content_type=content_type)

    def _authorized(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode())

    async def _route(self, request: Request, parts: list[str]) -> Reply:
        method = request.method
        if parts == ["openapi.json"]:
            return _only(method, "GET") or _json(200, openapi_document())
        if parts == ["v1", "status"]:
            return _only(method, "GET") or await self.status()
        if parts == ["v1", "apply"]:
            return _only(method, "POST") or await self.apply(request.body)
        if len(parts) == 3 and parts[:2] == ["v1", "resources"]:
            return _only(method, "GET") or await self.list(parts[2])
        if len(parts) == 5 and parts[:2] == ["v1", "resources"]:
            kind, namespace, name = parts[2:]
            if method == "GET":
                return await self.get(kind, namespace, name)
            if method == "PUT":
                return await self.put(kind, namespace, name, request.body)
            if method == "DELETE":
                return await self.delete(kind, namespace, name,
                                         request.query.get("resourceVersion") or None)
            return _not_allowed("GET, HEAD, PUT, DELETE")
        if len(parts) == 5 and parts[:2] == ["v1", "gateways"]:
            gateway = f"{parts[2]}/{parts[3]}"
            if not (valid_name(parts[2]) and valid_gateway_name(parts[3])):
                return _error(404, f"no Gateway {gateway}")
            if parts[4] == "ir":
                return _only(method, "GET") or await self.poll(gateway, request.query)
            if parts[4] == "reports":
                return _only(method, "POST") or await self.report(gateway, request.body)
            if parts[4] == "rollout":
                return _only(method, "GET") or self.rollout(gateway)
        if len(parts) == 6 and parts[:2] == ["v1", "gateways"] and parts[4] == "rollout" \
                and parts[5] in ROLLOUT_ACTIONS:
            return _only(method, "POST") or self.act_on_rollout(f"{parts[2]}/{parts[3]}",
                                                               parts[5])
        return _error(404, "not found")

    # -- resources -----------------------------------------------------------------------
    async def list(self, kind_path: str) -> Reply:
        kind = KIND_OF_PATH.get(kind_path)
        if kind is None:
            return _unknown_kind(kind_path)
        items = await self.state.store.list_resources(kind)
        # 10,000 Routes: seconds of validation and encoding, not on the event loop
        return await asyncio.to_thread(_listing, kind, items)

    async def get(self, kind_path: str, namespace: str, name: str) -> Reply:
        kind = KIND_OF_PATH.get(kind_path)
        if kind is None:
            return _unknown_kind(kind_path)
        item = await self.state.store.get(kind, namespace, name)
        if item is None:
            return _error(404, f"{kind} {namespace}/{name} not found")
        return _json(200, answer(item))

    async def put(self, kind_path: str, namespace: str, name: str, body: bytes) -> Reply:
        kind = KIND_OF_PATH.get(kind_path)
        if kind is None:
            return _unknown_kind(kind_path)
        try:
            raw = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"the body is not JSON: {exc}")
        data, expected = strip_server_fields(raw)
        validate(data, kind, namespace, name)
        existed = await self.state.store.get(kind, namespace, name) is not None
        item = await self.state.store.put(kind, namespace, name, normalized(data), expected)
        log.info("%s %s/%s written (version %s)", kind, namespace, name, item.version)
        return _json(200 if existed else 201, answer(item))

    async def delete(self, kind_path: str, namespace: str, name: str,
                     expected: str | None) -> Reply:
        kind = KIND_OF_PATH.get(kind_path)
        if kind is None:
            return _unknown_kind(kind_path)
        if not await self.state.store.delete(kind, namespace, name, expected):
            return _error(404, f"{kind} {namespace}/{name} not found")
        log.info("%s %s/%s deleted", kind, namespace, name)
        return _json(200, {"kind": kind, "namespace": namespace, "name": name,
                           "deleted": True})

    async def apply(self, body: bytes) -> Reply:
        """A batch as one store transaction: one revision, hence one IR version per Gateway.
        The plan is made again when a concurrent write invalidates it, unless an item pinned
        its version (then the conflict is the client's to resolve)."""
        try:
            raw = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"the body is not JSON: {exc}")
        metrics = self.state.metrics
        try:
            batch = await asyncio.to_thread(read_batch, raw)
        except BatchInvalid:
            metrics.applied("invalid")
            raise
        for attempt in range(1, APPLY_ATTEMPTS + 1):
            stored = await self.state.store.list_resources()
            try:
                plan = await asyncio.to_thread(plan_batch, batch, stored)
            except BatchConflict:
                metrics.applied("conflict")
                raise
            writes = writes_of(plan)
            if batch.dry_run or not writes:
                metrics.applied("dry_run" if batch.dry_run else "unchanged")
                return _applied(batch, plan, None)
            try:
                revision = await self.state.store.write_batch(writes)
            except Conflict as exc:
                if batch.pinned or attempt == APPLY_ATTEMPTS:
                    metrics.applied("conflict")
                    return _batch_error(409, "the store changed during the apply: nothing "
                                        "was written", [str(exc)], [])
                continue
            metrics.applied("applied")
            log.info("batch of %d resource(s) applied as revision %s: %d write(s)",
                     len(batch.items), revision, len(writes))
            return _applied(batch, plan, revision)
        raise AssertionError("unreachable")

    async def status(self) -> Reply:
        resources = [
            {"kind": s.kind, "namespace": s.key.split("/")[0], "name": s.key.split("/")[1],
             "state": s.state, "reasons": list(s.reasons), "gateways": list(s.gateways)}
            for s in self.state.statuses
        ]
        return _json(200, {"resources": resources, "gateways": await self.state.fleet()})

    # -- distribution --------------------------------------------------------------------
    async def poll(self, gateway: str, query: dict[str, str]) -> Reply:
        try:
            wait = min(max(float(query.get("wait", DEFAULT_WAIT)), 0.0), MAX_WAIT)
        except ValueError:
            return _error(400, "wait must be a number of seconds")
        if wait != wait:  # NaN
            return _error(400, "wait must be a number of seconds")
        try:
            reads = schema.parse_reads(query.get("schemas"))
        except schema.SchemaError as exc:
            return _error(400, str(exc))
        proxy, running = query.get("proxy", ""), FORMS.native_version(query.get("version", ""))
        if proxy:
            self.state.fleet_records.note(gateway, proxy, {"version": running})
            self.state.metrics.polled(gateway, proxy, running)
        if gateway not in self.state.snapshots:
            return _error(404, f"no Gateway {gateway}")
        after = FORMS.native_version(query.get("after", ""))
        served = await self.state.wait_for(gateway, after, wait, proxy)
        if served is None:
            return Reply(304)
        snapshot = served[0]
        if running and reads_deltas(query.get("delta"), reads, snapshot):
            delta = self.state.history.delta(gateway, running, snapshot,
                                             query.get("runs") == "1")
            if delta is not None:
                self.state.metrics.answered(gateway, "delta")
                return Reply(200, delta, DELTA_CONTENT_TYPE, headers=[
                    ("x-propylon-version", snapshot.version), (BASE_HEADER, running)])
        try:
            text, version = FORMS.encode(*served, reads)
        except schema.SchemaError as exc:  # docs/controlplane.md, "Version skew"
            log.warning("proxy %s of %s cannot be served: %s", proxy, gateway, exc)
            return _error(406, str(exc))
        self.state.metrics.answered(gateway, "full")
        return Reply(200, self.state.history.text_bytes(text),
                     headers=[("x-propylon-version", version),
                              (schema.SCHEMA_HEADER, str(schema.CURRENT.target(reads)))])

    async def report(self, gateway: str, body: bytes) -> Reply:
        if gateway not in self.state.snapshots:
            return _error(404, f"no Gateway {gateway}")
        try:
            data = json.loads(body or b"null")
            proxy, version, result = str(data["proxy"]), str(data["version"]), data["result"]
            version = FORMS.native_version(version)
            if not proxy or result not in ("ACK", "NACK", "HEALTH"):
                raise ValueError("proxy must be set and result be ACK, NACK or HEALTH")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            return _error(422, f"a report needs proxy, version and result: {exc}")
        if result == "HEALTH":
            health = data.get("health")
            if not isinstance(health, dict) or len(body) > 256 * 1024:
                return _error(422, "a HEALTH report needs a health object (at most 256 KiB)")
            self.state.fleet_records.note(gateway, proxy, {"health": health})
            return _json(200, {"recorded": True})
        self.state.metrics.reported(gateway, proxy, version, result)
        fields: dict[str, Any] = {"state": result}
        if result == "ACK":
            fields["version"] = version
        else:
            fields.update(lastNackVersion=version, lastError=str(data.get("error", ""))[:2000])
            log.warning("proxy %s of %s refused %s: %s", proxy, gateway, version,
                        fields["lastError"])
        self.state.fleet_records.note(gateway, proxy, fields)
        return _json(200, {"recorded": True})

    # -- progressive rollout -------------------------------------------------------------
    def rollout(self, gateway: str) -> Reply:
        if gateway not in self.state.snapshots:
            return _error(404, f"no Gateway {gateway}")
        data = self.state.rollouts.to_json(gateway)
        if data is None:
            return _error(404, f"Gateway {gateway} has no rollout (no spec.rollout, or no "
                               "version since the control plane started)")
        return _json(200, data)

    def act_on_rollout(self, gateway: str, action: str) -> Reply:
        if gateway not in self.state.snapshots:
            return _error(404, f"no Gateway {gateway}")
        return _json(200, self.state.act_on_rollout(gateway, action))


def _batch_error(status: int, message: str, reasons: list[str],
                 errors: list[dict[str, Any]]) -> Reply:
    return _json(status, {"error": message, "reasons": reasons, "errors": errors})


def _applied(batch: Batch, plan: list[Planned], revision: str | None) -> Reply:
    return _json(200, {"dryRun": batch.dry_run, "revision": revision,
                       "changes": [p.to_json(revision) for p in plan]})


def _only(method: str, allowed: str) -> Reply | None:
    if method == allowed or (allowed == "GET" and method == "HEAD"):
        return None
    return _not_allowed("GET, HEAD" if allowed == "GET" else allowed)


def _not_allowed(allow: str) -> Reply:
    return Reply(405, b'{"error": "method not allowed"}\n', headers=[("allow", allow)])


def valid_name(name: str) -> bool:
    return len(name) <= 63 and _NAME.fullmatch(name) is not None


def valid_gateway_name(name: str) -> bool:
    """A Gateway's name: a propylon.dev/v1 name, or a Gateway API Gateway's Kubernetes name,
    which its Gateway keeps (a DNS subdomain such as ``edge.example.com``)."""
    return valid_name(name) or is_object_name(name)


def _unknown_kind(kind: str) -> Reply:
    return _error(404, f"unknown kind {kind!r}; expected one of {', '.join(KIND_OF_PATH)}")
