"""The OpenAPI 3.0 document of the control plane's REST API (served at ``/openapi.json``).

Resource bodies are described by their envelope (``apiVersion``, ``kind``, ``metadata``,
``spec``); each kind's ``spec`` is documented in docs/reference.md and validated by the same
models as YAML files, so a schema-valid envelope may still get 422 with the reasons.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from propylon.config import KINDS
from propylon.config.kubernetes import KUBERNETES_KIND_NAMES, KUBERNETES_KINDS

_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
# a Kubernetes object's name (Gateway API, Ingress, Service, ...): a DNS subdomain
_OBJECT_NAME = {
    "type": "string", "maxLength": 253,
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
# the kinds the resource URLs take: propylon.dev/v1's and the Kubernetes kinds read as input
# (controlplane/resources.py KIND_OF_PATH; a Gateway API Gateway is a ``gateway``)
_KIND_NAMES = sorted({*KINDS, *KUBERNETES_KIND_NAMES})
_KIND_PATHS = [k.lower() for k in _KIND_NAMES]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = True,
           description: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema,
            "description": description}


_ERRORS = {
    "401": _json(_ref("Error"), "missing or wrong bearer token"),
    "404": _json(_ref("Error"), "unknown kind, or no such resource"),
    "503": _json(_ref("Error"), "the store is unavailable"),
}
_KIND = _param("kind", "path", {"type": "string", "enum": _KIND_PATHS}, description="kind")
_NS = _param("namespace", "path", _NAME)
_NAME_PARAM = _param(
    "name", "path", _OBJECT_NAME,
    description="a propylon.dev/v1 resource's name is a DNS label (no dot, at most 63 "
                "characters: 422 otherwise); a Kubernetes object's a DNS subdomain")
# a Gateway API Gateway's Gateway keeps its Kubernetes name, a DNS subdomain
_GATEWAY_NAME = _param(
    "name", "path", _OBJECT_NAME,
    description="the Gateway's name (a Gateway API Gateway's may be a DNS subdomain)")

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string"},
                       "reasons": {"type": "array", "items": {"type": "string"}}},
    },
    "Metadata": {
        "type": "object", "required": ["name"],
        "properties": {
            "name": {**_OBJECT_NAME, "description": "see the name parameter"},
            "namespace": _NAME,
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "resourceVersion": {"type": "string",
                                "description": "set by the server; send it back to replace "
                                               "only that version (409 otherwise)"},
            "contentHash": {"type": "string", "description": "set by the server"},
        },
    },
    "Resource": {
        # a propylon.dev/v1 resource has a spec; a Kubernetes object is as Kubernetes writes
        # it (a Secret's data, an EndpointSlice's endpoints and ports at the top)
        "type": "object", "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"type": "string",
                           "enum": ["propylon.dev/v1", *sorted(KUBERNETES_KINDS)]},
            "kind": {"type": "string", "enum": _KIND_NAMES},
            "metadata": _ref("Metadata"),
            "spec": {"type": "object", "description": "see docs/reference.md"},
        },
    },
    "ResourceList": {
        "type": "object", "required": ["kind", "items"],
        "properties": {"kind": {"type": "string"},
                       "items": {"type": "array", "items": _ref("Resource")}},
    },
    "Deleted": {
        "type": "object", "required": ["kind", "namespace", "name", "deleted"],
        "properties": {"kind": {"type": "string"}, "namespace": {"type": "string"},
                       "name": {"type": "string"}, "deleted": {"type": "boolean"}},
    },
    "ResourceStatus": {
        "type": "object", "required": ["kind", "namespace", "name", "state", "reasons"],
        "properties": {
            "kind": {"type": "string"}, "namespace": {"type": "string"},
            "name": {"type": "string"}, "state": {"type": "string",
                                                  "enum": ["Accepted", "Invalid"]},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "gateways": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Proxy": {
        "type": "object", "required": ["id", "connected"],
        "properties": {
            "id": {"type": "string"}, "connected": {"type": "boolean"},
            "version": {"type": "string", "description": "the IR version it runs"},
            "state": {"type": "string", "enum": ["ACK", "NACK"]},
            "lastError": {"type": "string", "description": "the last NACK's error"},
            "lastNackVersion": {"type": "string"},
            "lastSeen": {"type": "number"}, "replica": {"type": "string"},
            "health": {"type": "object", "description": "the last HEALTH report: endpoints, "
                                                        "panic, retries, traffic per version"},
        },
    },
    "Fleet": {
        "type": "object", "required": ["gateway", "proxies"],
        "properties": {
            "gateway": {"type": "string"},
            "version": {"type": "string", "nullable": True,
                        "description": "the IR version the control plane holds for it"},
            "proxies": {"type": "array", "items": _ref("Proxy")},
            "rollout": {"allOf": [_ref("Rollout")], "nullable": True,
                        "description": "null when the Gateway has no rollout"},
            "note": {"type": "string",
                     "description": "why the fleet needs attention, when it does (a proxy "
                                    "asking for a Gateway that is not configured); absent "
                                    "otherwise"},
        },
    },
    "Status": {
        "type": "object", "required": ["resources", "gateways"],
        "properties": {"resources": {"type": "array", "items": _ref("ResourceStatus")},
                       "gateways": {"type": "array", "items": _ref("Fleet")}},
    },
    "LabelSelector": {
        "type": "object",
        "description": "a Kubernetes LabelSelector; every requirement must hold",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {"type": "array", "items": {
                "type": "object", "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string",
                                 "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}}}}},
        },
    },
    "Batch": {
        "type": "object", "required": ["resources"],
        "properties": {
            "resources": {"type": "array", "items": _ref("Resource"),
                          "description": "each at most once; metadata.resourceVersion, "
                                         "when given, must be current (409)"},
            "prune": {"type": "object", "required": ["selector"],
                      "properties": {"selector": _ref("LabelSelector")},
                      "description": "delete stored resources the selector matches that "
                                     "resources no longer holds; it must require a label"},
            "dryRun": {"type": "boolean", "default": False,
                       "description": "answer the plan, write nothing"},
        },
    },
    "PlannedChange": {
        "type": "object", "required": ["action", "kind", "namespace", "name"],
        "properties": {
            "action": {"type": "string",
                       "enum": ["create", "update", "unchanged", "delete"]},
            "kind": {"type": "string"}, "namespace": {"type": "string"},
            "name": {"type": "string"},
            "resourceVersion": {"type": "string", "description": "after the apply"},
        },
    },
    "Applied": {
        "type": "object", "required": ["dryRun", "revision", "changes"],
        "properties": {
            "dryRun": {"type": "boolean"},
            "revision": {"type": "string", "nullable": True,
                         "description": "the one store revision written; null when nothing "
                                        "changed or dryRun"},
            "changes": {"type": "array", "items": _ref("PlannedChange")},
        },
    },
    "BatchError": {
        "type": "object", "required": ["error", "reasons", "errors"],
        "properties": {
            "error": {"type": "string"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["index", "reasons"],
                "properties": {
                    "index": {"type": "integer", "nullable": True,
                              "description": "position in resources; null: the batch"},
                    "kind": {"type": "string", "nullable": True},
                    "namespace": {"type": "string", "nullable": True},
                    "name": {"type": "string", "nullable": True},
                    "reasons": {"type": "array", "items": {"type": "string"}}}}},
        },
    },
    "Health": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok", "starting"]}},
    },
    "Report": {
        "type": "object", "required": ["proxy", "version", "result"],
        "properties": {"proxy": {"type": "string", "minLength": 1},
                       "version": {"type": "string"},
                       "result": {"type": "string", "enum": ["ACK", "NACK"]},
                       "error": {"type": "string"}},
    },
    "Rollout": {
        "type": "object",
        "required": ["phase", "stable", "candidate", "step", "steps", "share", "given",
                     "newVersion", "oldVersion", "reason", "timeline"],
        "description": "a Gateway's progressive rollout (docs/controlplane.md)",
        "properties": {
            "phase": {"type": "string", "enum": ["Progressing", "Paused", "Complete",
                                                 "RolledBack", "Aborted"]},
            "stable": {"type": "string", "description": "the version the fleet ran before"},
            "candidate": {"type": "string", "description": "the version rolled out"},
            "step": {"type": "integer", "description": "1-based index into steps"},
            "steps": {"type": "array", "items": {"type": "integer"}},
            "share": {"type": "integer", "description": "percent of connected proxies"},
            "interval": {"type": "number"}, "maxErrorRatio": {"type": "number"},
            "minRequests": {"type": "integer"},
            "startedAt": {"type": "number"}, "stepStartedAt": {"type": "number"},
            "nextStepAt": {"type": "number", "nullable": True},
            "proxiesConnected": {"type": "integer"},
            "given": {"type": "array", "items": {"type": "string"},
                      "description": "proxies given the candidate, in order"},
            "newVersion": _ref("Traffic"), "oldVersion": _ref("Traffic"),
            "reason": {"type": "string"},
            "timeline": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Traffic": {
        "type": "object",
        "properties": {"requests": {"type": "integer"}, "errors5xx": {"type": "integer"},
                       "ratio": {"type": "number"}},
    },
}


def _paths() -> dict[str, Any]:
    one = "/v1/resources/{kind}/{namespace}/{name}"
    return {
        "/v1/resources/{kind}": {"get": {
            "operationId": "listResources", "parameters": [_KIND],
            "responses": {"200": _json(_ref("ResourceList"), "the resources of one kind"),
                          **_ERRORS}}},
        one: {
            "parameters": [_KIND, _NS, _NAME_PARAM],
            "get": {"operationId": "getResource", "responses": {
                "200": _json(_ref("Resource"), "the resource, secrets redacted"), **_ERRORS}},
            "put": {
                "operationId": "putResource",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("Resource")}}},
                "responses": {
                    "200": _json(_ref("Resource"), "replaced"),
                    "201": _json(_ref("Resource"), "created"),
                    "400": _json(_ref("Error"), "the body is not JSON"),
                    "409": _json(_ref("Error"), "metadata.resourceVersion is stale"),
                    "422": _json(_ref("Error"), "the resource fails validation; reasons"),
                    **_ERRORS}},
            "delete": {
                "operationId": "deleteResource",
                "parameters": [_param("resourceVersion", "query", {"type": "string"}, False)],
                "responses": {"200": _json(_ref("Deleted"), "deleted"),
                              "409": _json(_ref("Error"), "resourceVersion is stale"),
                              **_ERRORS}},
        },
        "/v1/apply": {"post": {
            "operationId": "applyBatch",
            "description": "all or nothing: one store revision, one IR version per Gateway",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("Batch")}}},
            "responses": {
                "200": _json(_ref("Applied"), "applied (or planned, with dryRun)"),
                "400": _json(_ref("Error"), "the body is not JSON"),
                "409": _json(_ref("BatchError"), "a resourceVersion is stale, or the store "
                                                 "kept changing; nothing written"),
                "413": _json(_ref("Error"), "the batch is larger than the store or the "
                                            "server takes"),
                "422": _json(_ref("BatchError"), "invalid resources, each named; nothing "
                                                 "written"),
                **_ERRORS}}},
        "/v1/status": {"get": {"operationId": "status", "responses": {
            "200": _json(_ref("Status"), "statuses and fleets"), **_ERRORS}}},
        "/v1/gateways/{namespace}/{name}/ir": {"get": {
            "operationId": "pollGatewayIR",
            "parameters": [
                _NS, _GATEWAY_NAME,
                _param("after", "query", {"type": "string"}, False, "the version held"),
                _param("wait", "query", {"type": "number", "minimum": 0, "maximum": 60},
                       False, "seconds to wait for a newer version (default 30)"),
                _param("proxy", "query", {"type": "string"}, False, "the proxy's id"),
                _param("version", "query", {"type": "string"}, False, "the version it runs"),
                _param("delta", "query", {"type": "string"}, False,
                       "the IR schema of the deltas the proxy applies: it may be answered "
                       "with a delta against `version` (docs/controlplane.md, Deltas)"),
                _param("schemas", "query", {"type": "string"}, False,
                       "the IR schemas the proxy reads, comma-separated (`2,3`); absent: "
                       "schema 1 only (docs/controlplane.md, Version skew)"),
            ],
            "responses": {
                "200": {"description": "the Gateway's IR snapshot, or a delta against "
                                       "`version` (header x-propylon-delta-base)",
                        "content": {"application/json": {"schema": {"type": "object"}},
                                    "application/vnd.propylon.ir-delta+json": {
                                        "schema": {"type": "object"}}}},
                "304": {"description": "no newer version within the wait"},
                "400": _json(_ref("Error"), "bad wait or schemas"),
                "406": _json(_ref("Error"), "the proxy reads no IR schema this control plane "
                             "writes, or its schema cannot express the configuration"),
                **_ERRORS}}},
        "/v1/gateways/{namespace}/{name}/reports": {"post": {
            "operationId": "reportGatewayIR",
            "parameters": [_NS, _GATEWAY_NAME],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("Report")}}},
            "responses": {"200": _json({"type": "object"}, "recorded"),
                          "422": _json(_ref("Error"), "not a report"), **_ERRORS}}},
        "/v1/gateways/{namespace}/{name}/rollout": {"get": {
            "operationId": "getRollout",
            "parameters": [_NS, _GATEWAY_NAME],
            "responses": {"200": _json(_ref("Rollout"), "the Gateway's rollout"),
                          **_ERRORS}}},
        "/v1/gateways/{namespace}/{name}/rollout/{action}": {"post": {
            "operationId": "actOnRollout",
            "description": "pause (no widening; judging goes on), resume (the step's "
                           "interval starts again) or abort (every proxy back to stable)",
            "parameters": [_NS, _GATEWAY_NAME, _param(
                "action", "path", {"type": "string", "enum": ["pause", "resume", "abort"]})],
            "responses": {"200": _json(_ref("Rollout"), "done"),
                          "409": _json(_ref("Error"), "no rollout in a phase that allows it"),
                          **_ERRORS}}},
        "/healthz": {"get": {
            "operationId": "healthz", "security": [],
            "description": "no token needed (probes)",
            "responses": {
                "200": _json(_ref("Health"), "the store was read and translated"),
                "503": _json(_ref("Health"), "still starting")}}},
        "/metrics": {"get": {
            "operationId": "metrics", "security": [],
            "description": "no token needed (Prometheus); OpenMetrics when Accept asks",
            "responses": {"200": {"description": "the propylon_control_* series", "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"operationId": "openapi", "responses": {
            "200": _json({"type": "object"}, "this document"), **_ERRORS}}},
    }


@cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Propylon control plane", "version": "1"},
        "paths": _paths(),
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
