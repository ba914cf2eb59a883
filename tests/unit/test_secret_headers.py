"""Request headers whose values come from secrets (egress credential injection)."""

from __future__ import annotations

from pathlib import Path

import pytest

from propylon import ir
from propylon.admin.redact import redact
from propylon.config import load_text
from propylon.filters import FilterEnv, LocalResponse, build_filter
from propylon.translate import translate
from tests.support.applied import applied

CONFIG = """apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: egress}
spec:
  listeners: [{name: web, port: 8080}]
  policies:
    - headers:
        request:
          set:
            authorization: {secretRef: %s, prefix: "Bearer "}
            x-plain: visible
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: api}
spec:
  rules: [{forward: {backends: [{upstream: api}]}}]
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: api}
spec:
  endpoints: [{address: 127.0.0.1, port: 9}]
"""


class _Ctx:
    def __init__(self) -> None:
        self.request_headers: list[tuple[bytes, bytes]] = [(b"authorization", b"client's")]
        self.state = None


def _headers_policy(snapshot: ir.SnapshotIR) -> ir.PolicyIR:
    (rule,) = snapshot.gateways[0].rules
    return next(p for p in applied(snapshot.gateways[0], rule) if p.type == "headers")


def test_secret_is_resolved_sent_upstream_and_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGRESS_TOKEN", "s3cr3t")
    result = load_text(CONFIG % "{env: EGRESS_TOKEN}")
    assert result.errors == []
    policy = _headers_policy(translate(result.resources))
    edit = policy.spec["request"]["set"]["authorization"]
    assert edit == {"secret": "Bearer s3cr3t"}
    f = build_filter(policy, FilterEnv(None))
    ctx = _Ctx()
    assert f.on_request(ctx) is None  # type: ignore[arg-type]
    f.on_upstream_request(ctx)  # type: ignore[arg-type]
    assert (b"authorization", b"Bearer s3cr3t") in ctx.request_headers
    assert (b"authorization", b"client's") not in ctx.request_headers
    shown = str(redact(ir.to_data(translate(result.resources))))
    assert "s3cr3t" not in shown and "visible" in shown


def test_secret_from_a_file_relative_to_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    (tmp_path / "gw.yaml").write_text(CONFIG % "{file: token}")
    from propylon.config import load_paths

    policy = _headers_policy(translate(load_paths([tmp_path]).resources))
    assert policy.spec["request"]["set"]["authorization"] == {"secret": "Bearer from-file"}


def test_unreadable_secret_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_TOKEN", raising=False)
    policy = _headers_policy(translate(load_text(CONFIG % "{env: MISSING_TOKEN}").resources))
    edit = policy.spec["request"]["set"]["authorization"]
    assert edit == {"secretError": "environment variable MISSING_TOKEN is not set"}
    f = build_filter(policy, FilterEnv(None))
    answer = f.on_request(_Ctx())  # type: ignore[arg-type]
    assert isinstance(answer, LocalResponse) and answer.status == 503


def test_secrets_are_refused_on_responses() -> None:
    text = CONFIG.replace("request:", "response:") % "{env: X}"
    errors = [(e.field, e.message) for e in load_text(text).errors]
    assert errors == [("spec.policies[0].headers",
                       "secretRef values are only allowed on requests")]
