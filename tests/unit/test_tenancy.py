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
from tests.support.applied import applied

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

def headers_route(edits: str) -> str:
    """The Gateway and a Route of team-a whose rule has a headers policy of ``edits``."""
    return GATEWAY + textwrap.dedent(f"""\
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


@pytest.mark.parametrize("edits", [
    "response: {set: {x-request-id: abc}}",
    "response: {add: {X-Request-Id: abc}}",
    "response: {remove: [x-request-id]}",
])
def test_a_response_edit_of_the_request_id_is_refused(edits: str) -> None:
    """Every answer carries the request's id once (the access log's): a response edit of it
    gave the client two ids, or could not remove the gateway's."""
    (error,) = load_text(headers_route(edits), "team-a.yaml").errors
    assert error.field == "spec.rules[0].policies[0].headers.response"
    assert "header x-request-id is set by the gateway on every answer" in error.message


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
        pytest.param("response: {set: {x-consumer-name: abc}}", None, id="response-allowed"),
        pytest.param("request: {set: {x-consumers: a}}", None, id="other-name"),
    ],
)
def test_policies_cannot_set_headers_the_gateway_owns(edits: str, refused: str | None) -> None:
    loaded = load_text(headers_route(edits), "team-a.yaml")
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


# --- policy attachment stays within a namespace ---------------------------------------------

TEAM_ROUTES = """\
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r, namespace: team-a}
spec:
  hostnames: [a.test]
  rules: [{directResponse: {status: 200}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r, namespace: team-b}
spec:
  hostnames: [b.test]
  rules: [{directResponse: {status: 200}}]
"""


def policy_doc(namespace: str, refs: str, section: str = "ipFilter: {deny: [0.0.0.0/0]}",
               enforced: bool = False) -> str:
    return textwrap.dedent(f"""\
        ---
        apiVersion: propylon.dev/v1
        kind: Policy
        metadata: {{name: p, namespace: {namespace}}}
        spec:
          targetRefs: {refs}
          {section}
        """) + ("  enforced: true\n" if enforced else "")


def sources_of(snapshot: SnapshotIR, route: str) -> list[str]:
    (gateway,) = snapshot.gateways
    (rule,) = [r for r in gateway.rules if r.route == route]
    return [p.source for p in applied(gateway, rule)]


# (Policy namespace, targetRefs, the Routes that get it, the refused target or None)
# fmt: off
ATTACHMENTS = [
    pytest.param("team-a", "[{kind: Route, name: r, namespace: team-b}]", [], "Route team-b/r",
                 id="another-teams-route"),
    pytest.param("team-a", "[{kind: Gateway, name: edge, namespace: infra}]", [],
                 "Gateway infra/edge", id="another-namespaces-gateway"),
    pytest.param("team-a", "[{kind: Route, name: nowhere, namespace: team-b}]", [],
                 "Route team-b/nowhere", id="not-even-probing"),
    pytest.param("team-a", "[{kind: Route, name: r}]", ["team-a"], None, id="own-route"),
    pytest.param("team-a", "[{kind: Route, name: r, namespace: team-a}]", ["team-a"], None,
                 id="own-namespace-written-out"),
    pytest.param("infra", "[{kind: Gateway, name: edge, namespace: infra}]",
                 ["team-a", "team-b"], None, id="platform-team-on-its-gateway"),
    pytest.param("team-a", "[{kind: Route, name: r, namespace: team-b}, {kind: Route, name: r}]",
                 ["team-a"], "Route team-b/r", id="only-the-own-target"),
]
# fmt: on


@pytest.mark.parametrize(("namespace", "refs", "served", "refused"), ATTACHMENTS)
def test_a_policy_only_targets_its_own_namespace(
    namespace: str, refs: str, served: list[str], refused: str | None
) -> None:
    snapshot = build(GATEWAY + TEAM_ROUTES + policy_doc(namespace, refs))
    prefix = f"Policy {namespace}/p -> "
    for team in ("team-a", "team-b"):
        sources = sources_of(snapshot, f"Route {team}/r")
        assert [s[: len(prefix)] for s in sources] == ([prefix] if team in served else [])
    policy_status = status(snapshot, "Policy", f"{namespace}/p")
    if refused is None:
        assert policy_status.state == "Accepted"
        return
    assert policy_status.state == "Invalid"
    assert policy_status.reasons == (
        "spec.targetRefs[0].namespace: a Policy may only target resources of its own "
        f"namespace (team-a): {refused} is in another namespace",
    )


def test_an_enforced_policy_from_another_namespace_is_not_enforced() -> None:
    """A team cannot take over the central ingress: its enforced Policy on the platform's
    Gateway is refused, and the Gateway's own policies stay as they were."""
    text = GATEWAY + "  policies: [{headers: {response: {set: {x-edge: '1'}}}}]\n" + TEAM_ROUTES
    before = build(text)
    after = build(text + policy_doc(
        "team-a", "[{kind: Gateway, name: edge, namespace: infra}]",
        "headers: {response: {set: {x-edge: hijacked}}}", enforced=True))
    assert after.gateways == before.gateways
    assert status(after, "Gateway", "infra/edge") == status(before, "Gateway", "infra/edge")
    assert status(after, "Policy", "team-a/p").state == "Invalid"


def test_a_cross_namespace_target_is_located_at_its_namespace(tmp_path: Path) -> None:
    text = (GATEWAY + TEAM_ROUTES + "---\napiVersion: propylon.dev/v1\nkind: Policy\n"
            "metadata: {name: p, namespace: team-a}\nspec:\n  targetRefs:\n"
            "    - {kind: Route, name: r}\n    - kind: Route\n      name: r\n"
            "      namespace: team-b\n  ipFilter: {deny: [10.0.0.0/8]}\n")
    (tmp_path / "all.yaml").write_text(text)
    (issue,) = translate_with_issues(load_paths([tmp_path]).resources).issues
    lines = text.splitlines()
    line = next(i for i, t in enumerate(lines, 1) if "namespace: team-b" in t and "Route" not in t
                and i > 20)
    assert (issue.kind, issue.name, issue.field, issue.severity) == (
        "Policy", "team-a/p", "spec.targetRefs[1].namespace", "error")
    assert (issue.file, issue.line, issue.column) == (
        str(tmp_path / "all.yaml"), line, lines[line - 1].index("namespace") + 1)


# --- auth policies cannot write headers the gateway owns either ----------------------------

JWT = "jwt: {{keys: [{{file: k.pem}}], claimsToHeaders: [{{claim: sub, header: {header}}}]}}"
EXT_AUTH = "extAuth: {{url: 'http://127.0.0.1:9/check', upstreamHeaders: [x-user, {header}]}}"
CONSUMER_HEADERS = "{auth}: {{consumerHeaders: {{name: {header}, labels: x-consumer-tier}}}}"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        pytest.param(JWT, "jwt.claimsToHeaders[0].header", id="jwt-claim"),
        pytest.param(EXT_AUTH, "extAuth.upstreamHeaders[1]", id="ext-auth-answer"),
    ],
)
@pytest.mark.parametrize("header", ["x-consumer-name", "X-Consumer-Id", "x-request-id",
                                    "x-forwarded-client-cert"])
def test_auth_policies_cannot_write_headers_the_gateway_owns(
    section: str, field: str, header: str
) -> None:
    text = GATEWAY + route("team-a", "{backends: [{upstream: own}]}") + (
        f"      policies: [{{{section.format(header=header)}}}]\n")
    (error,) = load_text(text, "team-a.yaml").errors
    assert error.field == f"spec.rules[0].policies[0].{field}"
    assert error.message.startswith(f"header {header.lower()} is set by the gateway and cannot "
                                    "be set by a policy (x-consumer-*, ")
    assert error.line == len(text.splitlines()) and error.column is not None


@pytest.mark.parametrize("section", [
    pytest.param(JWT.format(header="x-user-sub"), id="jwt-other-header"),
    pytest.param(EXT_AUTH.format(header="x-user-tier"), id="ext-auth-other-header"),
    pytest.param(CONSUMER_HEADERS.format(auth="apiKey", header="x-consumer-name"),
                 id="api-key-consumer-headers"),
    pytest.param(CONSUMER_HEADERS.format(auth="basicAuth", header="x-consumer-user"),
                 id="basic-auth-consumer-headers"),
])
def test_headers_the_gateway_writes_for_consumers_stay_configurable(section: str) -> None:
    text = GATEWAY + OWN + route("team-a", "{backends: [{upstream: own}]}") + (
        f"      policies: [{{{section}}}]\n")
    assert load_text(text).errors == []
