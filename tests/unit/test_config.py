"""propylon.config: parsing every kind, errors with file:line and field, all at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from propylon.config import (
    ConfigError,
    Consumer,
    Gateway,
    Policy,
    Route,
    RouteTable,
    Upstream,
    load_paths,
    load_text,
    parse_duration,
)

HEAD = "apiVersion: propylon.dev/v1\n"


def doc(kind: str, spec: str, meta: str = "{name: x, namespace: ns}") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return f"{HEAD}kind: {kind}\nmetadata: {meta}\nspec:\n{body}\n"


GATEWAY = doc("Gateway", "listeners: [{name: web, port: 8080}]")
ROUTE = doc("Route", "rules: [{directResponse: {status: 200}}]")


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        pytest.param(GATEWAY, Gateway, id="gateway"),
        pytest.param(ROUTE, Route, id="route"),
        pytest.param(doc("RouteTable", "rules: [{redirect: {path: /x}}]"), RouteTable, id="table"),
        pytest.param(
            doc("Upstream", "endpoints: [{address: 10.0.0.1, port: 80}]"), Upstream, id="upstream"
        ),
        pytest.param(
            doc("Policy", "targetRefs: [{kind: Gateway, name: g}]\nheaders: {}"),
            Policy,
            id="policy",
        ),
        pytest.param(
            doc("Consumer", "credentials: {apiKeys: [{secretRef: {env: KEY}}]}"),
            Consumer,
            id="consumer",
        ),
    ],
)
def test_every_kind_parses(text: str, cls: type) -> None:
    result = load_text(text, "a.yaml")
    assert result.errors == []
    (resource,) = result.resources
    assert isinstance(resource, cls)
    assert resource.key == "ns/x"
    assert str(resource.source) == "a.yaml:1"


def test_defaults_are_filled_in() -> None:
    text = (
        doc(
            "Route",
            """
        rules:
          - forward: {backends: [{upstream: a}]}
        """,
        )
        + "---\n"
        + doc("Upstream", "endpoints: [{address: h, port: 1}]", "{name: u}")
    )
    route, upstream = load_text(text).resources
    assert isinstance(route, Route) and isinstance(upstream, Upstream)
    rule = route.spec.rules[0]
    assert rule.matches[0].path.prefix == "/"
    assert rule.forward is not None and rule.forward.timeout == 60.0
    assert rule.forward.backends[0].weight == 1
    assert upstream.namespace == "default"
    assert upstream.spec.connect_timeout == 5.0 and upstream.spec.idle_timeout == 60.0
    assert upstream.spec.load_balancer.policy == "round_robin"
    assert upstream.spec.connection_pool.max_connections_per_endpoint == 1024


def test_gateway_defaults() -> None:
    (gateway,) = load_text(GATEWAY).resources
    assert isinstance(gateway, Gateway)
    listener = gateway.spec.listeners[0]
    assert (listener.protocol, listener.address) == ("HTTP", "0.0.0.0")
    assert gateway.spec.route_selector.namespaces is None
    assert gateway.spec.invalid_route_response.status == 500
    assert gateway.spec.invalid_route_response.body == "route unavailable"


def test_header_names_are_lower_cased() -> None:
    text = doc(
        "Policy",
        """
        targetRefs: [{kind: Gateway, name: g}]
        headers: {request: {set: {X-Env: prod}, remove: [X-Debug]}}
        """,
    )
    (policy,) = load_text(text).resources
    assert isinstance(policy, Policy) and policy.spec.headers is not None
    assert policy.spec.headers.request.set == {"x-env": "prod"}
    assert policy.spec.headers.request.remove == ["x-debug"]


# (YAML text, expected line, expected field, expected message fragment)
ERROR_CASES = [
    pytest.param(
        doc(
            "Route",
            """
            rules:
              - forward:
                  backends:
                    - {upstream: a}
                    - {upstream: b, weight: 2000}
            """,
        ),
        9,
        "spec.rules[0].forward.backends[1].weight",
        "less than or equal to 1000",
        id="weight-range",
    ),
    pytest.param(
        doc("Route", "rules: [{directResponse: {status: 200}, colour: red}]"),
        5,
        "spec.rules[0].colour",
        "unknown field",
        id="unknown-field",
    ),
    pytest.param(
        doc("Route", "rules:\n  - matches: [{path: {prefix: /a}}]"),
        6,
        "spec.rules[0]",
        "exactly one of forward, redirect, directResponse, delegate",
        id="no-action",
    ),
    pytest.param(
        doc(
            "Route",
            """
            rules:
              - directResponse: {status: 200}
                redirect: {path: /x}
            """,
        ),
        6,
        "spec.rules[0]",
        "(found redirect, directResponse)",
        id="two-actions",
    ),
    pytest.param(
        doc("Route", "rules:\n  - matches: [{path: {prefix: a}}]\n    directResponse: {status: 1}"),
        6,
        "spec.rules[0].matches[0].path.prefix",
        'must start with "/"',
        id="relative-path",
    ),
    pytest.param(
        doc("Route", "rules:\n  - matches: [{path: {prefix: /a, exact: /b}}]\n    delegate: {}"),
        6,
        "spec.rules[0].matches[0].path",
        "exactly one of exact, prefix, regex",
        id="two-path-kinds",
    ),
    pytest.param(
        doc(
            "Route",
            "hostnames: [ok.example.com, bad_host]\nrules: [{directResponse: {status: 200}}]",
        ),
        5,
        "spec.hostnames[1]",
        'invalid hostname "bad_host"',
        id="hostname",
    ),
    pytest.param(
        doc("Route", "rules: [{forward: {backends: [{upstream: a}], timeout: 5}}]"),
        5,
        "spec.rules[0].forward.timeout",
        "a duration is a string like 250ms",
        id="duration-number",
    ),
    pytest.param(
        doc("Route", "rules: [{redirect: {statusCode: 304}}]"),
        5,
        "spec.rules[0].redirect.statusCode",
        "301, 302, 303, 307 or 308",
        id="redirect-status",
    ),
    pytest.param(
        doc("Gateway", "listeners:\n  - {name: a, port: 80}\n  - {name: a, port: 81}"),
        5,
        "spec.listeners",
        'listener name "a" is used twice',
        id="listener-names",
    ),
    pytest.param(
        doc("Gateway", "listeners:\n  - {name: a, port: 80}\n  - {name: b, port: 80}"),
        5,
        "spec.listeners",
        "port 80 is used twice on 0.0.0.0",
        id="listener-ports",
    ),
    pytest.param(
        doc("Gateway", "listeners: [{name: a, port: 70000}]"),
        5,
        "spec.listeners[0].port",
        "less than or equal to 65535",
        id="port-range",
    ),
    pytest.param(
        doc("Gateway", "listeners: [{name: a, port: 80}]\ntrustedProxies: [10.0.0.0/33]"),
        6,
        "spec.trustedProxies[0]",
        'invalid CIDR "10.0.0.0/33"',
        id="cidr",
    ),
    pytest.param(
        doc("Upstream", "endpoints: [{address: h, port: 1}]\nloadBalancer: {policy: ring_hash}"),
        6,
        "spec.loadBalancer",
        "ring_hash needs hashOn",
        id="ring-hash-needs-hash-on",
    ),
    pytest.param(
        doc("Upstream", "endpoints: [{address: h, port: 1}]\nloadBalancer: {policy: fastest}"),
        6,
        "spec.loadBalancer.policy",
        "'round_robin', 'least_request', 'random' or 'ring_hash'",
        id="lb-policy",
    ),
    pytest.param(
        doc("Consumer", "credentials: {apiKeys: [{secretRef: {env: A, file: /b}}]}"),
        5,
        "spec.credentials.apiKeys[0].secretRef",
        "exactly one of file, env",
        id="secret-ref",
    ),
    pytest.param(
        doc("Consumer", "credentials: {apiKeys: [{key: hunter2}]}"),
        5,
        "spec.credentials.apiKeys[0].key",
        "unknown field",
        id="inline-secret",
    ),
    pytest.param(
        doc(
            "Policy",
            "targetRefs: [{kind: Gateway, name: g}]\nheaders:\n  request:\n    set: {'x a': b}",
        ),
        8,
        "spec.headers.request.set.x a",
        'invalid header name "x a"',
        id="header-name",
    ),
    pytest.param(
        doc(
            "Policy",
            'targetRefs: [{kind: Gateway, name: g}]\nheaders: {request: {set: {a: "b\\nc"}}}',
        ),
        6,
        "spec.headers.request.set.a",
        "may not contain CR, LF or NUL",
        id="header-value",
    ),
    pytest.param(
        doc("Policy", "targetRefs: [{kind: Service, name: g}]\nheaders: {}"),
        5,
        "spec.targetRefs[0].kind",
        "'Gateway', 'Route', 'RouteTable', 'Upstream', 'HTTPRoute', 'GRPCRoute' or 'Ingress'",
        id="target-kind",
    ),
    pytest.param(
        doc("Policy", "targetRefs: [{kind: Gateway, name: g}]"),
        4,
        "spec",
        "at least one policy section",
        id="policy-without-section",
    ),
    pytest.param(
        doc("Route", "rules: [{directResponse: {status: 200}}]", "{namespace: ns}"),
        3,
        "metadata.name",
        "required field is missing",
        id="missing-name",
    ),
    pytest.param(
        doc("Route", "rules: [{directResponse: {status: 200}}]", "{name: Not_A_Label}"),
        3,
        "metadata.name",
        'invalid name "Not_A_Label"',
        id="bad-name",
    ),
    pytest.param(
        ROUTE.replace("propylon.dev/v1", "propylon.dev/v2"),
        1,
        "apiVersion",
        'must be "propylon.dev/v1"',
        id="api-version",
    ),
    pytest.param(
        ROUTE.replace("kind: Route", "kind: Rout"),
        2,
        "kind",
        "unknown kind 'Rout'",
        id="unknown-kind",
    ),
    pytest.param(
        doc("Route", "rules: [{directResponse: {status: 200}}]\nrules: []"),
        6,
        "spec",
        'duplicate key "rules"',
        id="duplicate-key",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "message"), ERROR_CASES)
def test_error_names_line_and_field(text: str, line: int, field: str, message: str) -> None:
    result = load_text(text, "c.yaml")
    assert result.resources == []  # a key written twice too: its resource is rejected
    matching = [e for e in result.errors if e.field == field]
    assert matching, [str(e) for e in result.errors]
    assert message in matching[0].message, str(matching[0])
    assert (matching[0].file, matching[0].line) == ("c.yaml", line)


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        pytest.param(
            doc("Gateway", "listeners: [{name: a, port: 443, protocol: HTTPS}]"),
            "spec.listeners[0]",
            "an HTTPS listener needs tls.certificates",
            id="https-without-tls",
        ),
        pytest.param(
            doc("Gateway", "listeners: [{name: a, port: 80, tls: {certificates: "
                           "[{certFile: a.pem, keyFile: a.key}]}}]"),
            "spec.listeners[0]",
            "tls is only allowed with protocol: HTTPS",
            id="tls-on-http",
        ),
        pytest.param(
            doc("Gateway", "listeners: [{name: a, port: 443, protocol: HTTPS, "
                           "tls: {certificates: []}}]"),
            "spec.listeners[0].tls.certificates",
            "list should have at least 1 item after validation, not 0",
            id="no-certificates",
        ),
        pytest.param(
            doc("Upstream", "endpoints: [{address: h, port: 1}]\ntls: {certFile: c.pem}"),
            "spec.tls",
            "certFile and keyFile go together",
            id="upstream-cert-without-key",
        ),
    ],
)
def test_tls_settings_are_checked(text: str, field: str, message: str) -> None:
    assert [(e.field, e.message) for e in load_text(text).errors] == [(field, message)]


def test_tls_paths_are_relative_to_the_yaml_file(tmp_path: Path) -> None:
    from propylon.translate import translate

    (tmp_path / "gw.yaml").write_text(
        doc("Gateway", "listeners: [{name: a, port: 443, protocol: HTTPS, tls: {certificates:"
                       " [{certFile: certs/a.pem, keyFile: /abs/a.key}]}}]")
        + "\n---\n" + doc("Upstream", "endpoints: [{address: h, port: 1}]\n"
                                      "tls: {sni: svc.mesh, caFile: ca.pem}")
    )
    result = load_paths([tmp_path])
    assert result.errors == []
    snapshot = translate(result.resources)
    tls = snapshot.gateways[0].listeners[0].tls
    assert tls is not None
    assert tls.certificates[0].cert_file == str(tmp_path / "certs/a.pem")
    assert tls.certificates[0].key_file == "/abs/a.key"


def test_resiliency_settings_parse_with_defaults() -> None:
    route = doc("Route", """
        rules:
          - forward:
              backends: [{upstream: a}]
              timeout: 2s
              retries: {attempts: 2, on: [connect-failure, 5xx], statuses: [429],
                        perTryTimeout: 300ms}
              mirror: {upstream: shadow, percent: 10}
    """)
    upstream = doc("Upstream", """
        endpoints: [{address: h, port: 1}]
        loadBalancer: {panicThreshold: 30}
        healthCheck:
          active: {path: /health, interval: 2s, expectedStatuses: [200, 204]}
          passive: {consecutiveErrors: 3}
        circuitBreaker: {maxRequests: 10}
    """)
    result = load_text(route + "---\n" + upstream)
    assert result.errors == []
    forward = result.resources[0].spec.rules[0].forward  # type: ignore[union-attr]
    assert forward.retries.attempts == 2 and forward.retries.per_try_timeout == 0.3
    assert forward.retries.backoff.base_interval == 0.025
    assert forward.mirror.percent == 10
    spec = result.resources[1].spec  # type: ignore[union-attr]
    assert spec.health_check.active.interval == 2.0
    assert spec.health_check.active.unhealthy_threshold == 3
    assert spec.health_check.passive.max_ejection_percent == 50
    assert spec.circuit_breaker.max_pending_requests == 1024


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param(doc("Route", "rules: [{forward: {backends: [{upstream: a}], "
                                  "retries: {on: [sometimes]}}}]"),
                     "spec.rules[0].forward.retries.on[0]", id="retry-condition"),
        pytest.param(doc("Route", "rules: [{forward: {backends: [{upstream: a}], "
                                  "retries: {attempts: 0}}}]"),
                     "spec.rules[0].forward.retries.attempts", id="retry-attempts"),
        pytest.param(doc("Upstream", "endpoints: [{address: h, port: 1}]\n"
                                     "healthCheck: {active: {type: udp}}"),
                     "spec.healthCheck.active.type", id="health-type"),
        pytest.param(doc("Route", "rules: [{forward: {backends: [{upstream: a}], "
                                  "mirror: {upstream: b, percent: 101}}}]"),
                     "spec.rules[0].forward.mirror.percent", id="mirror-percent"),
    ],
)
def test_resiliency_settings_are_checked(text: str, field: str) -> None:
    assert [e.field for e in load_text(text).errors] == [field]


def test_fault_injection_needs_delay_or_abort() -> None:
    text = doc("Route", "rules: [{directResponse: {status: 200},"
                        " policies: [{faultInjection: {}}]}]")
    assert [(e.field, e.message) for e in load_text(text).errors] == [
        ("spec.rules[0].policies[0].faultInjection", "faultInjection needs delay, abort or both")
    ]


@pytest.mark.parametrize(("kind", "item", "empty"), [
    ("Route", "{}", True),
    ("Route", "{headers: null}", True),
    ("Route", "{plugins: []}", True),
    ("Route", "{plugins: null, headers: null}", True),
    ("Gateway", "{enforced: true}", True),
    ("Route", "{headers: {request: {set: {x-a: b}}}}", False),
    ("Gateway", "{enforced: true, headers: {request: {set: {x-a: b}}}}", False),
])
def test_a_policy_item_needs_a_section(kind: str, item: str, empty: bool) -> None:
    if kind == "Route":
        text = doc("Route", f"rules: [{{directResponse: {{status: 200}}, policies: [{item}]}}]")
    else:
        text = doc("Gateway", f"listeners: [{{name: web, port: 8080}}]\npolicies: [{item}]")
    errors = [str(e) for e in load_text(text).errors]
    assert (errors != []) is empty, errors
    assert all("at least one policy section" in e for e in errors)


def test_unknown_policy_section_is_an_unknown_field() -> None:
    text = doc("Policy", "targetRefs: [{kind: Gateway, name: g}]\nheaders: {}\nteleport: {}")
    (error,) = load_text(text).errors
    assert (error.field, error.message) == ("spec.teleport", "unknown field")


def test_all_errors_are_reported_at_once() -> None:
    bad_route = doc(
        "Route",
        """
        hostnames: [-bad-]
        rules:
          - forward: {backends: [{upstream: a, weight: -1}], timeout: soon}
          - directResponse: {status: 99}
        """,
    )
    bad_upstream = doc("Upstream", "endpoints: []", "{name: u}")
    result = load_text(f"{bad_route}---\n{GATEWAY}---\n{bad_upstream}", "m.yaml")
    assert [r.ref for r in result.resources] == ["Gateway ns/x"]
    assert [(e.line, e.field) for e in result.errors] == [
        (5, "spec.hostnames[0]"),
        (7, "spec.rules[0].forward.backends[0].weight"),
        (7, "spec.rules[0].forward.timeout"),
        (8, "spec.rules[1].directResponse.status"),
        (20, "spec.endpoints"),
    ]


def _at(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """1-based line and column of the ``nth`` line holding ``needle``, at its first character."""
    found = [(i, line.index(needle) + 1) for i, line in enumerate(text.splitlines(), 1)
             if needle in line]
    return found[nth - 1]


def test_errors_carry_the_column_of_the_offending_node() -> None:
    """A mapping entry is located at its key, a list item at the item (block or flow), a
    missing field at the nearest node written (its parent's key)."""
    bad_route = doc(
        "Route",
        """
        hostnames: [-bad-]
        rules:
          - forward: {backends: [{upstream: a, weight: -1}], timeout: soon}
          - directResponse: {status: 99}
            colour: red
          - forward: {timeout: 1s}
        """,
    )
    bad_upstream = doc("Upstream", "endpoints: []", "{name: u}")
    text = f"{bad_route}---\n{GATEWAY}---\n{bad_upstream}"
    errors = load_text(text, "m.yaml").errors
    assert {e.field: (e.line, e.column) for e in errors} == {
        "spec.hostnames[0]": _at(text, "-bad-"),
        "spec.rules[0].forward.backends[0].weight": _at(text, "weight: -1"),
        "spec.rules[0].forward.timeout": _at(text, "timeout: soon"),
        "spec.rules[1].directResponse.status": _at(text, "status: 99"),
        "spec.rules[1].colour": _at(text, "colour: red"),
        "spec.rules[2].forward.backends": _at(text, "forward: {timeout: 1s}"),
        "spec.endpoints": _at(text, "endpoints: []"),
    }
    assert str(errors[0]).startswith("m.yaml:{}:{}: Route ns/x: spec.hostnames[0]: ".format(
        *_at(text, "-bad-")))


def test_yaml_problems_carry_their_column(tmp_path: Path) -> None:
    text = doc("Gateway", "listeners: [{name: web, port: @8080}]")
    syntax = load_text(text, "s.yaml").errors
    assert [(e.line, e.column) for e in syntax] == [_at(text, "@")]
    assert str(syntax[0]).startswith("s.yaml:{}:{}: invalid YAML: ".format(*_at(text, "@")))
    twice = doc("Gateway", "listeners: [{name: web, port: 80}]\nlisteners: [{name: b, port: 81}]")
    assert [(e.line, e.column, e.message) for e in load_text(twice).errors] == [
        (6, 3, 'duplicate key "listeners"')]
    # an error of its resource, which standalone mode contains (not of the whole file)
    rejected = load_text(twice).rejected
    assert [(r.ref, str(r.errors[0])) for r in rejected] == [
        ("Gateway ns/x", '<text>:6:3: Gateway ns/x: spec: duplicate key "listeners"')]
    mapping = load_text("---\n  - a\n  - b\n").errors
    assert [(e.line, e.column) for e in mapping] == [(2, 3)]
    (tmp_path / "a.yaml").write_text(ROUTE)
    (tmp_path / "b.yaml").write_text("# the same Route again\n" + ROUTE)
    (again,) = load_paths([tmp_path]).errors
    assert (again.line, again.column) == (2, 1) and "defined twice" in again.message


def test_data_without_yaml_has_no_column() -> None:
    from propylon.config import load_data

    (error,) = load_data({"apiVersion": "propylon.dev/v1", "kind": "Route",
                          "metadata": {"name": "r"}, "spec": {"rules": "no"}}).errors
    assert error.column is None


def test_error_str_names_file_line_column_kind_name_field() -> None:
    text = doc(
        "Route",
        "rules: [{directResponse: {status: 200}, colour: red}]",
        "{name: shop, namespace: shop}",
    )
    (error,) = load_text(text, "routes.yaml").errors
    assert str(error) == "routes.yaml:5:43: Route shop/shop: spec.rules[0].colour: unknown field"


@pytest.mark.parametrize(
    ("error", "text"),
    [
        pytest.param(
            ConfigError("a.yaml", None, None, None, None, "m"), "a.yaml: m", id="file-only"
        ),
        pytest.param(
            ConfigError("a.yaml", 3, "Route", None, None, "m"), "a.yaml:3: Route: m", id="kind"
        ),
        pytest.param(
            ConfigError("a.yaml", 3, None, None, "spec", "m"), "a.yaml:3: spec: m", id="field-only"
        ),
        pytest.param(
            ConfigError("a.yaml", 3, None, None, None, "m", column=7), "a.yaml:3:7: m", id="column"
        ),
        pytest.param(
            ConfigError("a.yaml", None, None, None, None, "m", column=7), "a.yaml: m",
            id="column-without-line",
        ),
    ],
)
def test_error_str_omits_missing_parts(error: ConfigError, text: str) -> None:
    assert str(error) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("250ms", 0.25, id="ms"),
        pytest.param("5s", 5.0, id="s"),
        pytest.param("1m", 60.0, id="m"),
        pytest.param("1h", 3600.0, id="h"),
        pytest.param("1.5s", 1.5, id="fraction"),
        pytest.param("1m30s", 90.0, id="sum"),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 s", "s", "1d", "-1s", "0s", "1s2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_duplicate_resource_names_both_locations(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(ROUTE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(GATEWAY + "---\n" + ROUTE)
    result = load_paths([tmp_path])
    assert [r.ref for r in result.resources] == ["Route ns/x", "Gateway ns/x"]
    (error,) = result.errors
    assert error.file.endswith("b.yml") and error.line == 7
    assert (error.kind, error.name) == ("Route", "ns/x")
    assert f"first at {tmp_path / 'a.yaml'}:1" in error.message


def test_folders_are_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "z.yaml").write_text(
        doc("Route", "rules: [{directResponse: {status: 200}}]", "{name: z}")
    )
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.yml").write_text(
        doc("Route", "rules: [{directResponse: {status: 200}}]", "{name: a}")
    )
    (tmp_path / "notes.txt").write_text("not yaml: [")
    result = load_paths([tmp_path])
    assert result.errors == []
    assert [r.name for r in result.resources] == ["a", "z"]


def test_missing_path_and_yaml_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(ROUTE + "---\nkind: [unclosed\n")
    result = load_paths([tmp_path / "nope.yaml", tmp_path / "broken.yaml"])
    assert [r.ref for r in result.resources] == ["Route ns/x"]
    missing, syntax = result.errors
    assert missing.message == "no such file or folder"
    assert syntax.line == 8 and syntax.message.startswith("invalid YAML")


def test_non_mapping_document() -> None:
    (error,) = load_text("- a\n- b\n", "l.yaml").errors
    assert (error.line, error.message) == (1, "a resource must be a mapping")
