"""A blocking client of the REST API for the command line (stdlib ``urllib``).

The CLI is a short-lived process with no event loop, so blocking calls with a timeout are
the simplest correct thing here.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from propylon.controlplane.resources import KIND_OF_PATH
from propylon.controlplane.token import DEFAULT_TOKEN_FILE, read_token

DEFAULT_CONTROL = "http://127.0.0.1:9000"


class ClientError(Exception):
    def __init__(self, status: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.data = data


def resolve_token(token_file: Path | None) -> str:
    """``--token-file``, else ``PROPYLON_TOKEN``, else the default token file."""
    if token_file is not None:
        return read_token(token_file)
    env = os.environ.get("PROPYLON_TOKEN", "").strip()
    return env or read_token(DEFAULT_TOKEN_FILE)


@dataclass
class Client:
    base: str
    token: str
    timeout: float = 30.0
    ca_file: Path | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base.rstrip("/") + path, data=data, method=method,
            headers={"authorization": f"Bearer {self.token}",
                     "content-type": "application/json"})
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as r:
                return r.status, _decode(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(0, f"cannot reach the control plane at {self.base}: {reason}") \
                from exc

    def checked(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.call(method, path, body)
        if status >= 300:
            message = data.get("error", "") if isinstance(data, dict) else str(data)
            reasons = data.get("reasons", []) if isinstance(data, dict) else []
            raise ClientError(status, "; ".join([f"HTTP {status}: {message}", *reasons]), data)
        return data

    # -- resources -----------------------------------------------------------------------
    def list_kind(self, kind: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.checked("GET", f"/v1/resources/{kind.lower()}")[
            "items"]
        return items

    def list_all(self) -> list[dict[str, Any]]:
        return [item for kind in KIND_OF_PATH for item in self.list_kind(kind)]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.checked("GET", resource_path(kind, namespace, name))
        return data

    def put(self, data: dict[str, Any]) -> dict[str, Any]:
        meta = data["metadata"]
        path = resource_path(data["kind"], meta.get("namespace", "default"), meta["name"])
        answer: dict[str, Any] = self.checked("PUT", path, data)
        return answer

    def delete(self, kind: str, namespace: str, name: str, version: str | None = None) -> None:
        query = f"?resourceVersion={quote(version)}" if version else ""
        self.checked("DELETE", resource_path(kind, namespace, name) + query)

    def apply(self, resources: list[dict[str, Any]], prune: dict[str, Any] | None = None,
              dry_run: bool = False) -> dict[str, Any]:
        """``POST /v1/apply``: the plan, and the revision it was written as (not when
        ``dry_run``). A refused batch raises ClientError naming each bad resource."""
        body: dict[str, Any] = {"resources": resources, "dryRun": dry_run}
        if prune is not None:
            body["prune"] = {"selector": prune}
        answer: dict[str, Any] = self.checked("POST", "/v1/apply", body)
        return answer

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.checked("GET", "/v1/status")
        return data

    def rollout(self, gateway: str, action: str) -> dict[str, Any]:
        """``pause``, ``resume`` or ``abort`` the rollout of Gateway ``namespace/name``."""
        namespace, _, name = gateway.partition("/")
        data: dict[str, Any] = self.checked(
            "POST", f"/v1/gateways/{quote(namespace)}/{quote(name)}/rollout/{action}")
        return data


def resource_path(kind: str, namespace: str, name: str) -> str:
    return f"/v1/resources/{kind.lower()}/{quote(namespace)}/{quote(name)}"


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode("utf-8", "replace")
