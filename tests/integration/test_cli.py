"""``propylon validate``, ``propylon explain`` and the command line itself, as a user runs
them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from propylon.config.parse_pool import PARALLEL_MIN_CHARS
from propylon.standalone import PREVIEW_MIN_ROUTES, PREVIEW_SHARES
from tests.support import resources as r
from tests.support.client import roundtrip
from tests.support.gateway import Gateway
from tests.support.net import free_port, poll_until, port_refuses

GOOD = r.dump(
    r.gateway(8080, policies=[r.headers_policy(response={"set": {"x-served-by": "gw"}})]),
    r.route("shop", hostnames=["shop.test"], rules=[
        r.rule({"prefix": "/api"}, name="canary", headers=[{"name": "x-canary", "value": "1"}],
               forward=r.forward("v2"),
               policies=[r.headers_policy(request={"set": {"x-env": "canary"}})]),
        r.rule({"prefix": "/api"}, name="stable", forward=r.forward("v1")),
    ]),
    r.upstream("v1", 9001),
    r.upstream("v2", 9002),
)


def propylon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propylon", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **(env or {})},
    )


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def position(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of ``needle``'s first character."""
    return next((i, line.index(needle) + 1) for i, line in enumerate(text.splitlines(), 1)
                if needle in line)


@pytest.fixture
def good_dir(tmp_path: Path) -> Path:
    (tmp_path / "gateway.yaml").write_text(GOOD)
    return tmp_path


def test_validate_accepts_a_good_file(good_dir) -> None:
    result = propylon("validate", str(good_dir / "gateway.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


def test_validate_reports_every_error_with_file_and_line(tmp_path) -> None:
    text = GOOD.replace("  rules:", "  bogusField: 1\n  rules:", 1).replace(
        "port: 9002", "port: 99999")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = propylon("validate", str(bad))
    assert result.returncode == 1
    assert f"{bad}:{line_of(text, 'bogusField')}:" in result.stderr, result.stderr
    assert f"{bad}:{line_of(text, 'port: 99999')}:" in result.stderr, result.stderr


def test_validate_reports_what_run_would_refuse_to_install(tmp_path) -> None:
    """Valid resources that cannot run: a CA file that is not there. `run` refuses them when
    it compiles the configuration; `validate` compiles it too and says why."""
    text = GOOD + "---\n" + r.dump(r.route("authz", rules=[r.rule(
        {"prefix": "/authz"}, forward=r.forward("v1"),
        policies=[{"extAuth": {"url": "https://localhost:9443/check",
                               "caFile": "missing-ca.pem"}}])]))
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    result = propylon("validate", str(config))
    assert result.returncode == 1, result.stdout
    assert "extAuth.caFile" in result.stderr and "missing-ca.pem" in result.stderr, (
        result.stderr)
    assert not result.stdout.startswith("ok:")


def test_validate_names_the_upstream_tls_file_it_cannot_load(tmp_path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(GOOD + "---\n" + r.dump({
            "apiVersion": "propylon.dev/v1", "kind": "Upstream",
            "metadata": {"name": "partner", "namespace": "default"},
            "spec": {"endpoints": [{"address": "127.0.0.1", "port": 9443}],
                     "tls": {"sni": "partner.test", "caFile": "partner-ca.pem"}}},
        r.route("partner", rules=[r.rule({"prefix": "/partner"}, forward=r.forward("partner"))])))
    result = propylon("validate", str(config))
    assert result.returncode == 1, result.stdout
    assert "Upstream default/partner: tls.caFile: cannot load" in result.stderr, result.stderr
    assert str(tmp_path / "partner-ca.pem") in result.stderr, result.stderr


def https_gateway(port: int, folder: Path) -> str:
    """A Gateway whose HTTPS listener's certificate file is not a certificate."""
    (folder / "cert.pem").write_text("not a certificate\n")
    (folder / "key.pem").write_text("not a key\n")
    gateway = r.gateway(port)
    gateway["spec"]["listeners"][0].update(protocol="HTTPS", tls={"certificates": [
        {"certFile": "cert.pem", "keyFile": "key.pem"}]})
    return r.dump(gateway)


CERT_PROBLEM = ("Gateway default/gw listener web (127.0.0.1:{port}): tls.certificates[0]: "
                "cannot load certFile '{folder}/cert.pem' / keyFile '{folder}/key.pem': not a "
                "PEM certificate with its private key")


@pytest.mark.parametrize("workers", [1, 2])
def test_run_with_a_configuration_its_workers_cannot_compile_stops_with_their_error(
        tmp_path, workers: int) -> None:
    """What translation accepts and a proxy cannot install (a listener's certificate that is
    not one) refuses the start: each worker's installation is the check of the first
    configuration (``Supervisor.install_first``), with one worker or more; the gateway
    stops, exit code 1, the reason in its log naming the Gateway, the listener and the
    files (it said "[SSL] PEM lib (_ssl.c:3905)"), and never answered on its port."""
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(https_gateway(port, tmp_path))
    result = propylon("run", str(config), "--workers", str(workers), "--admin", "off")
    assert result.returncode == 1, result.stderr
    assert "configuration refused" in result.stderr, result.stderr
    assert CERT_PROBLEM.format(port=port, folder=tmp_path) in result.stderr, result.stderr
    assert port_refuses(port)


def test_validate_loads_the_listeners_certificates(tmp_path) -> None:
    """``validate`` loads each HTTPS listener's certificates as a worker does (it said "ok"
    for a configuration that ``run`` refuses), and names the problem at its Gateway."""
    config = tmp_path / "gateway.yaml"
    config.write_text(https_gateway(8443, tmp_path))
    result = propylon("validate", str(config))
    assert result.returncode == 1, result.stdout
    assert f"{config}:1:1: " + CERT_PROBLEM.format(port=8443, folder=tmp_path) in (
        result.stderr), result.stderr


def test_validate_reports_a_yaml_syntax_error_with_its_line(tmp_path) -> None:
    bad = tmp_path / "syntax.yaml"
    bad.write_text("apiVersion: propylon.dev/v1\nkind: Gateway\nspec: [unclosed\n")
    result = propylon("validate", str(bad))
    assert result.returncode == 1
    assert f"{bad}:" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("headers", "rule", "policy", "upstream"),
    [
        pytest.param(["-H", "x-canary:1"], "rule canary", "Route default/shop rule canary",
                     "default/v2", id="canary-rule"),
        pytest.param([], "rule stable", "Gateway default/gw", "default/v1", id="stable-rule"),
    ],
)
def test_explain_names_rule_policies_and_upstream(good_dir, headers, rule, policy,
                                                   upstream) -> None:
    result = propylon("explain", "GET", "http://shop.test:8080/api/items", *headers,
                      "-c", str(good_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(rule in line for line in lines), result.stdout
    policy_lines = [line for line in lines if line.strip().startswith("1.")]
    assert policy_lines and "headers" in policy_lines[0] and policy in policy_lines[0]
    assert any(f"upstream {upstream}" in line for line in lines), result.stdout


def test_explain_exits_3_when_nothing_matches(good_dir) -> None:
    """3, not 2: a request nothing serves is an answer, not a usage error."""
    result = propylon("explain", "GET", "http://other.test:8080/api", "-c", str(good_dir))
    assert result.returncode == 3
    assert "no rule matches" in result.stdout


# -- validate: the lines CI problem matchers read, and JSON ------------------------------------
def _two_schema_errors(tmp_path: Path) -> tuple[Path, str]:
    text = GOOD.replace("  rules:", "  bogusField: 1\n  rules:", 1).replace(
        "port: 9002", "port: 99999")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    return bad, text


def test_validate_prints_file_line_message_without_a_severity_prefix(tmp_path) -> None:
    bad, _ = _two_schema_errors(tmp_path)
    result = propylon("validate", str(bad))
    assert result.returncode == 1
    *problems, summary = result.stderr.splitlines()
    assert len(problems) == 2, result.stderr
    for line in problems:
        assert re.match(rf"{re.escape(str(bad))}:\d+:\d+: \S", line), line
    assert summary == "2 problem(s)"


def test_validate_locates_an_invalid_route_at_the_offending_field(tmp_path) -> None:
    """A route that fails resolution (unknown upstream) is printed with file:line too."""
    text = GOOD + "---\n" + r.dump(r.route("broken", rules=[
        r.rule({"prefix": "/broken"}, forward=r.forward("missing"))]))
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    result = propylon("validate", str(config))
    assert result.returncode == 1
    line = next(line for line in result.stderr.splitlines() if "default/missing" in line)
    at = "{}:{}".format(*position(text, "upstream: missing"))
    assert line.startswith(f"{config}:{at}: Route default/broken: "
                           "spec.rules[0].forward.backends[0].upstream: "), line


def test_validate_reports_warnings_without_failing(tmp_path) -> None:
    """A rule another rule fully shadows is served as written: a warning, exit 0."""
    text = r.dump(
        r.gateway(8080),
        r.route("shop", rules=[r.rule({"prefix": "/api"}, name="first", forward=r.forward("v1")),
                               r.rule({"prefix": "/api"}, name="hidden", forward=r.forward("v1"))]),
        r.upstream("v1", 9001),
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    result = propylon("validate", str(config))
    assert result.returncode == 0, result.stderr
    assert re.match(rf"{re.escape(str(config))}:\d+:\d+: Route default/shop: spec.rules\[1\]: ",
                    result.stderr), result.stderr
    assert result.stdout.startswith("ok:") and "1 warning(s)" in result.stdout
    document = json.loads(propylon("validate", "-o", "json", str(config)).stdout)
    assert document["valid"] is True
    assert [p["severity"] for p in document["problems"]] == ["warning"]


def test_validate_json_gives_file_line_column_message_severity(tmp_path) -> None:
    bad, text = _two_schema_errors(tmp_path)
    result = propylon("validate", "-o", "json", str(bad))
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["valid"] is False and document["version"] is None
    problems = document["problems"]
    assert all(set(p) == {"file", "line", "column", "message", "severity"} for p in problems)
    assert sorted((p["file"], p["line"], p["column"]) for p in problems) == [
        (str(bad), *position(text, "bogusField")), (str(bad), *position(text, "port: 99999"))]
    assert {p["severity"] for p in problems} == {"error"}
    assert any("bogusField: unknown field" in p["message"] for p in problems), problems


def test_validate_json_of_a_good_configuration(good_dir) -> None:
    result = propylon("validate", "-o", "json", str(good_dir))
    assert result.returncode == 0, result.stdout
    document = json.loads(result.stdout)
    assert document["valid"] is True and document["problems"] == [] and document["version"]


def test_validate_gives_the_column_of_a_yaml_syntax_error(tmp_path) -> None:
    text = GOOD.replace("port: 9002", "port: @9002")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = propylon("validate", str(bad))
    assert result.returncode == 1
    line, column = position(text, "@")
    assert result.stderr.startswith(f"{bad}:{line}:{column}: invalid YAML: "), result.stderr
    (problem,) = json.loads(propylon("validate", "-o", "json", str(bad)).stdout)["problems"]
    assert (problem["line"], problem["column"]) == (line, column)


def test_validate_refuses_a_policy_targeting_another_namespace(tmp_path) -> None:
    """A team's Policy on the platform's Gateway (enforced, so it would win over every
    route) is Invalid, printed at the targetRef's namespace; the Gateway keeps serving."""
    text = r.dump(
        r.gateway(8080, namespace="infra", routeSelector={"namespaces": ["*"]}),
        r.route("shop", namespace="team-a", rules=[r.rule({"prefix": "/"}, directResponse={
            "status": 200})]),
        r.policy("takeover", [{"kind": "Gateway", "name": "gw", "namespace": "infra"}],
                 namespace="team-a", enforced=True, ipFilter={"deny": ["0.0.0.0/0"]}),
    )
    config = tmp_path / "teams.yaml"
    config.write_text(text)
    result = propylon("validate", str(config))
    assert result.returncode == 1, result.stdout
    policy_text = text[text.index("kind: Policy"):]
    line, column = position(policy_text, "namespace: infra")  # the targetRef's
    line += text[:text.index("kind: Policy")].count("\n")
    assert result.stderr.splitlines()[0] == (
        f"{config}:{line}:{column}: Policy team-a/takeover: spec.targetRefs[0].namespace: "
        "a Policy may only target resources of its own namespace (team-a): Gateway infra/gw is "
        "in another namespace"), result.stderr
    (problem,) = json.loads(propylon("validate", "-o", "json", str(config)).stdout)["problems"]
    assert (problem["line"], problem["column"], problem["severity"]) == (line, column, "error")


# -- explain: redirects, weighted splits, listeners --------------------------------------------
SPLIT = r.dump(
    r.gateway(8080),
    r.route("shop", hostnames=["shop.test"], rules=[
        r.rule({"prefix": "/api"}, name="canary", forward=r.forward(("v1", 90), ("v2", 10))),
        r.rule({"exact": "/old"}, name="moved", redirect={"path": "/new", "statusCode": 301}),
    ]),
    r.upstream("v1", 9001),
    r.upstream("v2", 9002),
)


@pytest.fixture
def split_config(tmp_path: Path) -> Path:
    config = tmp_path / "split.yaml"
    config.write_text(SPLIT)
    return config


def test_explain_lists_every_backend_of_a_weighted_split(split_config) -> None:
    result = propylon("explain", "GET", "http://shop.test:8080/api/x", "-c", str(split_config))
    assert result.returncode == 0, result.stderr
    assert re.search(r"upstream default/v1\s+weight 90 \(90%\)", result.stdout), result.stdout
    assert re.search(r"upstream default/v2\s+weight 10 \(10%\)", result.stdout), result.stdout


def test_explain_shows_a_redirect_as_its_location(split_config) -> None:
    result = propylon("explain", "GET", "http://shop.test:8080/old?x=1", "-c", str(split_config))
    assert result.returncode == 0, result.stderr
    assert "action   redirect 301 to http://shop.test:8080/new?x=1" in result.stdout, (
        result.stdout)
    assert "RedirectIR" not in result.stdout


def test_explain_a_url_without_port_arrives_on_the_only_listener(split_config) -> None:
    result = propylon("explain", "GET", "http://shop.test/old", "-c", str(split_config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Gateway default/gw (listener web, port 8080)" in result.stdout
    assert "redirect 301 to http://shop.test/new" in result.stdout


def test_explain_asks_for_listener_when_several_could_take_the_url(tmp_path) -> None:
    gateway = r.gateway(8080)
    gateway["spec"]["listeners"].append(
        {"name": "internal", "port": 8081, "protocol": "HTTP", "address": "127.0.0.1"})
    config = tmp_path / "two.yaml"
    config.write_text(SPLIT.replace(r.dump(r.gateway(8080)), r.dump(gateway), 1))
    url = "http://shop.test/api"
    ambiguous = propylon("explain", "GET", url, "-c", str(config))
    assert ambiguous.returncode == 2
    assert "--listener" in ambiguous.stderr and "8081" in ambiguous.stderr, ambiguous.stderr
    for choice, port in [("internal", 8081), ("8080", 8080), ("default/gw/internal", 8081)]:
        chosen = propylon("explain", "GET", url, "--listener", choice, "-c", str(config))
        assert chosen.returncode == 0, chosen.stderr
        assert f"port {port})" in chosen.stdout, chosen.stdout


# -- the command line: version, completion, help, usage errors, exit codes ---------------------
COMMANDS = ["run", "sidecar", "validate", "explain", "control", "proxy", "apply", "diff", "get",
            "status"]


def test_version() -> None:
    result = propylon("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"propylon \S+\n", result.stdout), result.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        pytest.param("propylon valid", ["validate"], id="command"),
        pytest.param("propylon get routet", ["routetable"], id="kind"),
        pytest.param("propylon get route -o ", ["table", "yaml", "json"], id="output"),
    ],
)
def test_shell_completion(words, expected) -> None:
    cword = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    result = propylon(env={"_PROPYLON_COMPLETE": "complete_bash", "COMP_WORDS": words,
                           "COMP_CWORD": cword})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


@pytest.mark.parametrize("command", [pytest.param([], id="propylon"),
                                     *[pytest.param([c], id=c) for c in COMMANDS]])
def test_help_names_values_not_python_types(command) -> None:
    result = propylon(*command, "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert not re.search(r"<(str|int|float|bool|path|list\[)", result.stdout), result.stdout


NO_CONTROL_PLANE = {"PROPYLON_TOKEN": "t", "PROPYLON_CONTROL": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["get", "route", "-o", "xml"], id="get-output"),
        pytest.param(["status", "-o", "xml"], id="status-output"),
        pytest.param(["validate", "-o", "yaml", "x.yaml"], id="validate-output"),
        pytest.param(["get", "widgets"], id="get-kind"),
        pytest.param(["run", "x.yaml", "--log-level", "loud"], id="run-log-level"),
        pytest.param(["control", "--log-level", "loud"], id="control-log-level"),
    ],
)
def test_bad_values_are_usage_errors(args) -> None:
    result = propylon(*args, env=NO_CONTROL_PLANE)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["get", "route"], id="get"),
        pytest.param(["status"], id="status"),
        pytest.param(["diff", "-f", "CONFIG"], id="diff"),
        pytest.param(["proxy", "--gateway", "infra/edge", "--admin", "off"], id="proxy"),
    ],
)
def test_a_missing_token_exits_2_in_every_command(args, good_dir, tmp_path) -> None:
    args = [str(good_dir) if a == "CONFIG" else a for a in args]
    env = {"PROPYLON_TOKEN": "", "XDG_CONFIG_HOME": str(tmp_path / "empty"),
           "PROPYLON_CONTROL": "http://127.0.0.1:9"}
    result = propylon(*args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no token" in result.stderr


def test_an_unreachable_control_plane_exits_1() -> None:
    result = propylon("get", "routes", env=NO_CONTROL_PLANE)
    assert result.returncode == 1
    assert "cannot reach the control plane" in result.stderr


def test_run_parses_many_large_files_on_every_core_then_serves_them_all(tmp_path) -> None:
    """Past ``PARALLEL_MIN_CHARS`` of YAML, ``propylon run``'s first build parses the files in
    forked children before its workers start (``FileSource.first_build``): every route of
    every file answers, and a Route with an unknown field is contained and reported at its
    file and line, as when parsed in one process."""
    padding = "".join(f"# {'padding ' * 10}{n}\n" for n in range(1000))  # ~90 kB a file
    gateway = Gateway(tmp_path, lambda port: r.dump(r.gateway(port)), log_level="warning")
    broken: dict[str, int] = {}
    for team in range(8):
        routes = [r.route(f"t{team}-r{i}", hostnames=[f"t{team}.test"],
                          rules=[r.rule({"exact": f"/r{i}"}, directResponse={"status": 200})])
                  for i in range(50)]
        routes[25]["spec"]["rules"][0]["bogus"] = team
        text = padding + r.dump(*routes)
        gateway.write_config(text, name=f"team-{team}.yaml")
        broken[f"team-{team}.yaml"] = line_of(text, "bogus")
    assert sum(p.stat().st_size for p in gateway.config_dir.iterdir()) > PARALLEL_MIN_CHARS
    try:
        gateway.start()
        for team in range(8):
            host = {"host": f"t{team}.test"}
            assert roundtrip(gateway.port, "GET", "/r49", headers=host).status == 200
            assert roundtrip(gateway.port, "GET", "/r0", headers=host).status == 200
        log = gateway.stderr_text()
        for name, line in broken.items():
            assert f"{name}:{line}" in log, log
    finally:
        gateway.stop()
    assert not processes_naming(gateway.config_dir)  # nor the parsing children


def test_validate_of_many_large_files_reports_each_problem_at_its_line(tmp_path) -> None:
    """Past ``PARALLEL_MIN_CHARS`` of YAML, validate parses the files in forked children
    (``config/parse_pool.py``): problems in files of either share are reported at their file
    and line, exactly as when parsed in one process."""
    padding = "".join(f"# {'padding ' * 10}{n}\n" for n in range(1000))  # ~90 kB a file
    (tmp_path / "gateway.yaml").write_text(GOOD)
    broken: dict[Path, int] = {}
    for team in range(8):
        routes = [r.route(f"r{i}", namespace=f"team-{team}", hostnames=[f"t{team}.test"],
                          rules=[r.rule({"exact": f"/r{i}"}, directResponse={"status": 200})])
                  for i in range(50)]
        routes[25]["spec"]["rules"][0]["bogus"] = team
        text = padding + r.dump(*routes)
        path = tmp_path / f"team-{team}.yaml"
        path.write_text(text)
        broken[path] = line_of(text, "bogus")
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) > PARALLEL_MIN_CHARS
    result = propylon("validate", str(tmp_path))
    assert result.returncode == 1
    for path, line in broken.items():
        assert f"{path}:{line}:" in result.stderr, result.stderr
    assert result.stderr.count("unknown field") == 8, result.stderr
    assert not processes_naming(tmp_path)  # the children it forked ended with it
    for path in broken:  # and with every file valid, the check's own child too
        path.write_text(path.read_text().replace("bogus", "name"))
    result = propylon("validate", str(tmp_path))
    assert result.returncode == 0 and result.stdout.startswith("ok: 1 gateway(s)"), (
        result.stdout + result.stderr)
    assert not processes_naming(tmp_path)


def processes_naming(path: Path) -> list[int]:
    """The processes whose command line names ``path`` (a fork keeps its parent's)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(path).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_run_compiles_a_first_part_of_a_large_configuration_while_translating_the_rest(
        tmp_path) -> None:
    """At start-up, a configuration of at least ``PREVIEW_MIN_ROUTES`` Routes is translated in
    steps: growing parts of the Routes in key order are sent to the workers to compile, not
    served, each while the next is translated (the second as a delta against the first);
    the install is then a delta against the last. What is served is the whole
    configuration, of the version ``validate`` gives; a reload after it works as any other."""
    count = PREVIEW_MIN_ROUTES + 400
    gateway = Gateway(tmp_path, lambda port: r.dump(r.gateway(port)), workers=2,
                      log_level="debug")
    beta = [{"headers": {"response": {"set": {"x-part": "second"}}}}]
    for part in range(4):
        routes = [r.route(f"r{i:05d}", rules=[
            r.rule({"exact": f"/r{i}"}, directResponse={"status": 200, "body": f"route {i}"}),
            r.rule({"exact": f"/r{i}/beta"}, policies=beta, directResponse={"status": 200})])
            for i in range(part * count // 4, (part + 1) * count // 4)]
        gateway.write_config(r.dump(*routes), name=f"part-{part}.yaml")
    try:
        gateway.start()
        for i in (0, count // 2, count - 1):  # in the first part, and after it
            answer = roundtrip(gateway.port, "GET", f"/r{i}")
            assert (answer.status, answer.body) == (200, f"route {i}".encode())
        assert roundtrip(gateway.port, "GET", f"/r{count - 1}/beta").header(
            "x-part") == "second"
        log = gateway.stderr_text()
        assert "sent the workers a first part of the configuration to compile" in log, log
        parts = len(PREVIEW_SHARES)
        assert log.count("compiled a first part of the configuration") == 2 * parts, log
        assert "could not compile a first part" not in log, log
        validated = propylon("validate", str(gateway.config_dir))
        version = re.search(r"version (\w+)", validated.stdout)
        assert version is not None, validated.stdout
        assert f"configuration {version[1]} installed on 2 worker(s)" in log, log
        gateway.write_config(r.dump(r.route("added", rules=[
            r.rule({"exact": "/added"}, directResponse={"status": 201})])), name="added.yaml")
        gateway.signal(signal.SIGHUP)
        poll_until(lambda: roundtrip(gateway.port, "GET", "/added").status == 201, 30)
        assert roundtrip(gateway.port, "GET", f"/r{count - 1}").status == 200
    finally:
        gateway.stop()
