"""Tenant isolation at translation and validation: cross-namespace upstream references need a
grant (``Upstream.spec.allowedNamespaces``), headers the gateway owns cannot be set by a
policy, and resolution errors carry the file:line of the offending node."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from propylon.config import load_paths, load_text
from propylon.ir import ForwardIR, SnapshotIR, StatusIR
from propylon.translate import translate, translate_with_issues

GATEWAY = """\
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  listeners: [{name: web, port: 8080}]
  routeSelector: {namespaces: ["*"]}
"""

PAYROLL = """\
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: payroll, namespace: team-b}
spec:
  endpoints: [{address: 127.0.0.1, port: 9200}]
"""


def route(namespace: str, forward: str) -> str:
    return textwrap.dedent(f"""\
        ---
        apiVersion: propylon.dev/v1
        kind: Route
        metadata: {{name: r, namespace: {namespace}}}
        spec:
          rules:
            - forward: {forward}
        """)


def build(text: str) -> SnapshotIR:
    loaded = load_text(text)
    assert loaded.errors == [], [str(e) for e in loaded.errors]
    return translate(loaded.resources)


def status(snapshot: SnapshotIR, kind: str, key: str) -> StatusIR:
    return next(s for s in snapshot.statuses if (s.kind, s.key) == (kind, key))


# (grant line added to the Upstream's spec or "", referring namespace, forward, served)
# fmt: off
GRANTS = [
    pytest.param("", "team-a", "{backends: [{upstream: team-b/payroll}]}", False,
                 id="no-grant"),
    pytest.param("  allowedNamespaces: [team-c]\n", "team-a",
                 "{backends: [{upstream: team-b/payroll}]}", False, id="grant-to-another"),
    pytest.param("  allowedNamespaces: [team-a]\n", "team-a",
                 "{backends: [{upstream: team-b/payroll}]}", True, id="granted"),
    pytest.param('  allowedNamespaces: ["*"]\n', "team-a",
                 "{backends: [{upstream: team-b/payroll}]}", True, id="granted-to-all"),
    pytest.param("", "team-b", "{backends: [{upstream: team-b/payroll}]}", True,
                 id="own-namespace-needs-none"),
    pytest.param("", "team-b", "{backends: [{upstream: payroll}]}", True, id="short-name"),
    pytest.param("", "team-a",
                 "{backends: [{upstream: own}], mirror: {upstream: team-b/payroll}}", False,
                 id="mirror-needs-a-grant"),
    pytest.param("  allowedNamespaces: [team-a]\n", "team-a",
                 "{backends: [{upstream: own}], mirror: {upstream: team-b/payroll}}", True,
                 id="mirror-granted"),
]
# fmt: on

OWN = """\
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: own, namespace: team-a}
spec:
  endpoints: [{address: 127.0.0.1, port: 9100}]
"""


@pytest.mark.parametrize(("grant", "namespace", "forward", "served"), GRANTS)
def test_cross_namespace_references_need_a_grant(
    grant: str, namespace: str, forward: str, served: bool
) -> None:
    snapshot = build(GATEWAY + PAYROLL + grant + OWN + route(namespace, forward))
    (gateway,) = snapshot.gateways
    (rule,) = gateway.rules
    route_status = status(snapshot, "Route", f"{namespace}/r")
    if served:
        assert not rule.replaced and isinstance(rule.action, ForwardIR)
        assert route_status.state == "Accepted"
        assert "team-b/payroll" in {u.key for u in gateway.upstreams}
    else:
        assert rule.replaced and rule.action == gateway.invalid_route_response
        assert route_status.state == "Invalid"
        (reason,) = route_status.reasons
        assert reason.endswith(
            'upstream "team-b/payroll" does not grant references from namespace "team-a" '
            "(the Upstream's spec.allowedNamespaces)"
        )
        assert "team-b/payroll" not in {u.key for u in gateway.upstreams}


def test_the_gateway_must_still_admit_the_namespace() -> None:
    narrow = GATEWAY.replace('namespaces: ["*"]', "namespaces: [team-a]")
    snapshot = build(narrow + PAYROLL + '  allowedNamespaces: ["*"]\n' +
                     route("team-a", "{backends: [{upstream: team-b/payroll}]}"))
    (reason,) = status(snapshot, "Route", "team-a/r").reasons
    assert 'namespace "team-b" is not admitted by Gateway infra/edge' in reason


def test_a_delegated_route_table_is_judged_by_its_own_namespace() -> None:
    text = GATEWAY + PAYROLL + "  allowedNamespaces: [team-c]\n" + textwrap.dedent("""\
        ---
        apiVersion: propylon.dev/v1
        kind: Route
        metadata: {name: r, namespace: team-c}
        spec:
          rules:
            - forward: {backends: [{upstream: team-b/payroll}]}
            - matches: [{path: {prefix: /t}}]
              delegate: {selector: {namespaces: [team-a]}}
        ---
        apiVersion: propylon.dev/v1
        kind: RouteTable
        metadata: {name: t, namespace: team-a}
        spec:
          rules:
            - matches: [{path: {prefix: /t/x}}]
              forward: {backends: [{upstream: team-b/payroll}]}
        """)
    snapshot = build(text)
    assert status(snapshot, "Route", "team-c/r").state == "Accepted"
    assert status(snapshot, "RouteTable", "team-a/t").state == "Invalid"


@pytest.mark.parametrize("value", ["Team-A", "team_a", ""])
def test_allowed_namespaces_are_names_or_star(value: str) -> None:
    loaded = load_text(PAYROLL.replace("---\n", "") + f'  allowedNamespaces: ["{value}"]\n')
    (error,) = loaded.errors
    assert (error.line, error.field) == (6, "spec.allowedNamespaces[0]")


# --- headers the gateway owns ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("edits", "refused"),
    [
        pytest.param("request: {set: {x-consumer-name: admin}}", "x-consumer-name", id="set"),
        pytest.param("request: {add: {X-Consumer-Labels: tier=gold}}", "x-consumer-labels",
                     id="add-any-case"),
        pytest.param("request: {set: {x-consumer-id: '7'}}", "x-consumer-id", id="prefix"),
        pytest.param("request: {set: {x-forwarded-client-cert: 'Hash=1'}}",
                     "x-forwarded-client-cert", id="client-cert"),
        pytest.param("request: {set: {x-request-id: abc}}", "x-request-id", id="request-id"),
        pytest.param("request: {remove: [x-consumer-name, x-request-id]}", None,
                     id="remove-allowed"),
        pytest.param("response: {set: {x-request-id: abc}}", None, id="response-allowed"),
        pytest.param("request: {set: {x-consumers: a}}", None, id="other-name"),
    ],
)
def test_policies_cannot_set_headers_the_gateway_owns(edits: str, refused: str | None) -> None:
    text = GATEWAY + textwrap.dedent(f"""\
        ---
        apiVersion: propylon.dev/v1
        kind: Route
        metadata: {{name: r, namespace: team-a}}
        spec:
          rules:
            - directResponse: {{status: 200}}
              policies:
                - headers:
                    {edits}
        """)
    loaded = load_text(text, "team-a.yaml")
    if refused is None:
        assert loaded.errors == []
        return
    (error,) = loaded.errors
    assert error.line == 16  # the request: line
    assert error.field == "spec.rules[0].policies[0].headers.request"
    assert f"header {refused} is set by the gateway" in error.message


def test_a_policy_resource_cannot_set_them_either() -> None:
    text = GATEWAY + textwrap.dedent("""\
        ---
        apiVersion: propylon.dev/v1
        kind: Policy
        metadata: {name: p, namespace: team-a}
        spec:
          targetRefs: [{kind: Gateway, name: edge, namespace: infra}]
          headers: {request: {set: {x-consumer-name: admin}}}
        """)
    (error,) = load_text(text).errors
    assert error.field == "spec.headers.request"


# --- resolution errors carry file:line ------------------------------------------------------

def test_resolution_errors_are_located(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(GATEWAY + PAYROLL)
    (tmp_path / "team-a.yaml").write_text(textwrap.dedent("""\
        apiVersion: propylon.dev/v1
        kind: Route
        metadata: {name: r, namespace: team-a}
        spec:
          rules:
            - matches: [{path: {prefix: /a}}]
              forward:
                backends:
                  - upstream: own
                  - upstream: missing
            - matches: [{path: {prefix: /b}}]
              forward:
                backends: [{upstream: team-b/payroll}]
            - matches: [{path: {prefix: /c}}]
              delegate: {selector: {namespaces: [team-a]}}
        ---
        apiVersion: propylon.dev/v1
        kind: RouteTable
        metadata: {name: t, namespace: team-a}
        spec:
          rules:
            - matches: [{path: {prefix: /elsewhere}}]
              directResponse: {status: 200}
        ---
        apiVersion: propylon.dev/v1
        kind: Upstream
        metadata: {name: own, namespace: team-a}
        spec:
          endpoints: [{address: 127.0.0.1, port: 9100}]
        """))
    issues = translate_with_issues(load_paths([tmp_path]).resources).issues
    file = str(tmp_path / "team-a.yaml")
    assert [(i.file, i.line, i.kind, i.name, i.field, i.severity) for i in issues] == [
        (file, 10, "Route", "team-a/r", "spec.rules[0].forward.backends[1].upstream", "error"),
        (file, 13, "Route", "team-a/r", "spec.rules[1].forward.backends[0].upstream", "error"),
        (file, 22, "RouteTable", "team-a/t", "spec.rules[0].matches[0].path", "error"),
    ]
    assert str(issues[0]) == (
        f"{file}:10:13: Route team-a/r: spec.rules[0].forward.backends[1].upstream: "
        'upstream "team-a/missing" not found'
    )


def test_resources_without_a_file_have_no_line() -> None:
    from propylon.config import load_data

    data = {"apiVersion": "propylon.dev/v1", "kind": "Route",
            "metadata": {"name": "r", "namespace": "infra"},
            "spec": {"rules": [{"forward": {"backends": [{"upstream": "nowhere"}]}}]}}
    resources = [*load_text(GATEWAY).resources, *load_data(data, "request body").resources]
    (issue,) = translate_with_issues(resources).issues
    assert (issue.file, issue.line) == ("request body", None)
    assert issue.field == "spec.rules[0].forward.backends[0].upstream"
