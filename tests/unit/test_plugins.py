"""Plugins found through entry points: what makes one usable, where it sits in the order, and
how its sections are validated, attached, translated and compiled like built-in ones."""

from __future__ import annotations

import asyncio
import itertools
import textwrap
from pathlib import Path
from typing import Any

import pytest

from propylon.config import load_text
from propylon.config.plugin import ExternalConfig
from propylon.config.policy import PolicyItem
from propylon.filters import FilterEnv, build_filter
from propylon.ir import PolicyIR
from propylon.policies import plugins as plugin_registry
from propylon.policies.plugins import Plugin, PluginSet, discover, installed_plugins
from propylon.runtime import chain_memo
from propylon.runtime.compile import compile_chain
from propylon.translate import translate
from tests.support.applied import applied
from tests.support.plugin_dist import write_dist

_serial = itertools.count()

PROBE = """
from propylon.filters import Filter
from propylon.schema import Model


class Settings(Model):
    level: int = 1


class Probe(Filter):
    policy_type = "{name}"
    settings_model = Settings
{extra}
    @classmethod
    def from_spec(cls, settings, source, env):
        return cls(source)
"""


def probe(name: str, extra: str = "") -> str:
    return PROBE.format(name=name, extra=textwrap.indent(extra, "    ") + "\n" if extra else "")


def found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_points: dict[str, str],
          source: str) -> dict[str, Plugin]:
    """Discover after installing a distribution of one module, ``source``, with
    ``entry_points`` (whose targets say ``MOD`` for the module's name)."""
    module = f"probe_plugin_{next(_serial)}"
    root = write_dist(tmp_path / "site", f"probe-{module}",
                      {n: t.replace("MOD", module) for n, t in entry_points.items()},
                      {module: source})
    monkeypatch.syspath_prepend(str(root))
    return {p.name: p for p in discover() if p.name in entry_points}


@pytest.mark.parametrize(("name", "target", "source", "error"), [
    pytest.param("probe", "MOD:Probe", "raise RuntimeError('boom')",
                 "cannot import MOD:Probe: RuntimeError: boom", id="import-fails"),
    pytest.param("probe", "MOD:Probe", "class Probe:\n    policy_type = 'probe'\n",
                 "MOD:Probe is not a subclass of propylon.filters.Filter", id="not-a-filter"),
    pytest.param("other", "MOD:Probe", probe("probe"),
                 "MOD:Probe says policy_type 'probe', not 'other'", id="names-differ"),
    pytest.param("cors", "MOD:Probe", probe("cors"),
                 '"cors" is the name of a built-in policy section', id="built-in-name"),
    pytest.param("plugins", "MOD:Probe", probe("plugins"),
                 '"plugins" is the name of a built-in policy section', id="section-name"),
    pytest.param("9lives", "MOD:Probe", probe("9lives"),
                 "a plugin name is a letter, then", id="bad-name"),
    pytest.param("probe", "MOD:Probe", probe("probe", "before = 'body'"),
                 "before = 'body' is not a phase; the phases are ipFilter, waf, cors, auth,",
                 id="no-such-phase"),
    pytest.param("probe", "MOD:Probe", probe("probe", "before = 'jwt'"),
                 "before = 'jwt' is not a phase", id="a-type-is-not-a-phase"),
    pytest.param("probe", "MOD:Probe", probe("probe", "before = 'auth'\nafter = 'cors'"),
                 "a plugin sets before or after, not both", id="both"),
    pytest.param("probe", "MOD:Probe", probe("probe", "settings_model = Filter.settings_model"),
                 "MOD:Probe has no settings_model", id="no-settings-model"),
    pytest.param("probe", "MOD:Probe", probe("probe", "sees_consumers = 'no'"),
                 "MOD:Probe: sees_consumers is True or False, not 'no'", id="sees-not-a-bool"),
    pytest.param("probe", "MOD:Holder.Probe",
                 probe("probe") + "\nclass Holder:\n    Probe = Probe\n",
                 "MOD:Holder.Probe: the entry point must name a class of its module",
                 id="nested-class"),
])
def test_an_unusable_plugin_is_kept_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, target: str, source: str,
        error: str) -> None:
    plugin = found(tmp_path, monkeypatch, {name: target}, source)[name]
    module = plugin.target.partition(":")[0]
    assert plugin.row is None
    assert plugin.error is not None and plugin.error.startswith(error.replace("MOD", module))
    plugins = PluginSet([plugin])
    assert plugins.not_installed(name) == f'plugin "{name}" cannot be used: {plugin.error}'


def test_two_packages_cannot_claim_one_name(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    found(tmp_path / "a", monkeypatch, {"probeTwice": "MOD:Probe"}, probe("probeTwice"))
    twice = found(tmp_path / "b", monkeypatch, {"probeTwice": "MOD:Probe"},
                  probe("probeTwice"))
    assert twice["probeTwice"].error is not None
    assert twice["probeTwice"].error.startswith("declared by more than one package: probe-")


@pytest.mark.parametrize(("extra", "placement", "neighbours"), [
    pytest.param("", "after headers", ("headers", "cache"), id="default"),
    pytest.param("before = 'auth'", "before auth", ("cors", "jwt"), id="before-auth"),
    pytest.param("after = 'auth'", "after auth", ("extAuth", "rateLimit"), id="after-auth"),
    pytest.param("before = 'ipFilter'", "before ipFilter", (None, "ipFilter"), id="first"),
    pytest.param("after = 'faultInjection'", "after faultInjection", ("faultInjection", None),
                 id="last"),
])
def test_a_plugin_says_where_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    extra: str, placement: str,
                                    neighbours: tuple[str | None, str | None]) -> None:
    plugin = found(tmp_path, monkeypatch, {"probe": "MOD:Probe"},
                   probe("probe", extra))["probe"]
    assert plugin.error is None and plugin.placement == placement
    names = PluginSet([plugin]).table.names
    index = names.index("probe")
    before, after = neighbours
    assert names[index - 1] == before if before else index == 0
    assert names[index + 1] == after if after else index == len(names) - 1


@pytest.mark.parametrize(("extra", "sees"), [
    pytest.param("", True, id="default"),
    pytest.param("sees_consumers = False", False, id="not"),
    pytest.param("sees_consumers = True", True, id="says-so"),
])
def test_a_plugin_says_whether_its_filters_see_the_consumers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, sees: bool) -> None:
    """A worker builds again, on a Consumer change, the chains holding a filter of a type
    that may be built from the Consumers (``chain_memo.sees_consumers``): a plugin's, unless
    its class says it is not."""
    plugin = found(tmp_path, monkeypatch, {"probe": "MOD:Probe"},
                   probe("probe", extra))["probe"]
    assert plugin.error is None and plugin.row is not None
    assert plugin.row.sees_consumers is sees
    table = PluginSet([plugin]).table
    monkeypatch.setattr(chain_memo, "policy_types", lambda: table)
    assert chain_memo.sees_consumers([PolicyIR("headers", {}, "test")]) is False
    assert chain_memo.sees_consumers([PolicyIR("headers", {}, "test"),
                                      PolicyIR("probe", {"level": 1}, "test")]) is sees


def test_plugins_of_one_place_run_in_name_order() -> None:
    table = installed_plugins().table  # the installed test plugins, all after headers
    after_headers = table.names[table.rank("headers") + 1: table.rank("cache")]
    assert after_headers == ("jsonRewrite", "testBodyTally", "testRequestBody",
                             "testResponseBody", "testStampAfterHeaders")


# -- sections ----------------------------------------------------------------------------------
def test_a_section_s_config_is_its_settings_with_defaults() -> None:
    ((name, settings),) = PolicyItem.model_validate(
        {"plugins": [{"name": "jsonRewrite", "config": {"remove": ["a"]}}]}).sections()
    assert name == "jsonRewrite" and type(settings).__name__ == "JsonRewriteSettings"
    assert settings.model_dump(mode="json", by_alias=True) == {
        "set": {}, "remove": ["a"], "responseHeaders": {}, "maxBodySize": 1048576}
    no_config = PolicyItem.model_validate({"plugins": [{"name": "testBodyTally"}]})
    assert no_config.sections()[0][1].model_dump() == {"trailer": "x-body-bytes"}


def test_an_empty_plugins_list_is_no_section() -> None:
    text = textwrap.dedent("""\
        apiVersion: propylon.dev/v1
        kind: Policy
        metadata: {name: p, namespace: shop}
        spec:
          targetRefs: [{kind: Gateway, name: edge}]
          plugins: []
        """)
    assert [e.message for e in load_text(text).errors] == [
        "a Policy needs at least one policy section"]


@pytest.fixture
def external() -> Any:
    plugin_registry.allow_external(["edgeOnly"])
    yield installed_plugins()
    plugin_registry.allow_external(())


def test_an_external_plugin_s_config_is_passed_on_as_written(external: PluginSet) -> None:
    item = PolicyItem.model_validate(
        {"plugins": [{"name": "edgeOnly", "config": {"any": ["thing"]}}]})
    ((name, config),) = item.sections()
    assert name == "edgeOnly" and isinstance(config, ExternalConfig)
    assert config.model_dump(mode="json", by_alias=True) == {"any": ["thing"]}
    table = external.table
    assert table.rank("headers") < table.rank("edgeOnly") < table.rank("cache")
    assert external.external == frozenset({"edgeOnly"})


def test_an_installed_plugin_is_checked_even_when_declared_external() -> None:
    plugin_registry.allow_external(["jsonRewrite"])
    try:
        assert installed_plugins().external == frozenset()
        with pytest.raises(ValueError, match="maxBodySize"):
            PolicyItem.model_validate(
                {"plugins": [{"name": "jsonRewrite", "config": {"maxBodySize": "big"}}]})
    finally:
        plugin_registry.allow_external(())


# -- attachment and precedence, as for built-in types -------------------------------------------
CONFIG = """
apiVersion: propylon.dev/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  listeners: [{name: web, port: 8080}]
  routeSelector: {namespaces: [shop]}
  policies:
    - plugins: [{name: jsonRewrite, config: {responseHeaders: {x-level: gateway}}}]
    - enforced: true
      plugins: [{name: testBodyTally, config: {trailer: x-enforced}}]
---
apiVersion: propylon.dev/v1
kind: Route
metadata: {name: r, namespace: shop}
spec:
  rules:
    - name: own
      matches: [{path: {prefix: /own}}]
      forward: {backends: [{upstream: up}]}
      policies:
        - headers: {response: {set: {x-h: "1"}}}
          plugins:
            - {name: testBodyTally, config: {trailer: x-rule}}
            - {name: jsonRewrite, config: {responseHeaders: {x-level: rule}}}
            - {name: testStampBeforeAuth}
    - name: inherited
      matches: [{path: {prefix: /inherited}}]
      forward: {backends: [{upstream: up}]}
---
apiVersion: propylon.dev/v1
kind: Policy
metadata: {name: route-wide, namespace: shop}
spec:
  targetRefs: [{kind: Route, name: r}]
  plugins: [{name: jsonRewrite, config: {responseHeaders: {x-level: route}}}]
---
apiVersion: propylon.dev/v1
kind: Upstream
metadata: {name: up, namespace: shop}
spec:
  endpoints: [{address: 127.0.0.1, port: 9001}]
"""


def rule_policies(name: str) -> list[tuple[str, dict[str, Any], str]]:
    loaded = load_text(CONFIG)
    assert loaded.errors == [], [str(e) for e in loaded.errors]
    snapshot = translate(loaded.resources)
    (gateway,) = snapshot.gateways
    rule = next(rule for rule in gateway.rules if rule.name == name)
    return [(p.type, p.spec, p.source) for p in applied(gateway, rule)]


def test_the_most_specific_section_of_a_plugin_wins_unless_enforced() -> None:
    own = rule_policies("own")
    assert [(kind, source) for kind, _, source in own] == [
        ("testStampBeforeAuth", "Route shop/r rule own"),  # before auth: first
        ("headers", "Route shop/r rule own"),
        ("jsonRewrite", "Route shop/r rule own"),  # the rule's replaces the route's
        ("testBodyTally", "Gateway shop/edge (enforced)"),  # the enforced one stays
    ]
    assert own[2][1]["responseHeaders"] == {"x-level": "rule"}
    assert own[3][1] == {"trailer": "x-enforced"}
    inherited = rule_policies("inherited")
    assert [(kind, source) for kind, _, source in inherited] == [
        ("jsonRewrite", "Policy shop/route-wide -> Route shop/r"),  # the route's beats the GW's
        ("testBodyTally", "Gateway shop/edge (enforced)"),
    ]


def test_the_ir_holds_the_plugin_s_name_and_its_config_with_defaults() -> None:
    own = dict((kind, spec) for kind, spec, _ in rule_policies("own"))
    assert own["jsonRewrite"] == {"set": {}, "remove": [], "maxBodySize": 1048576,
                                  "responseHeaders": {"x-level": "rule"}}
    assert own["testStampBeforeAuth"] == {"answer": None}


# -- compiling -------------------------------------------------------------------------------
def test_a_proxy_without_the_plugin_refuses_the_ir_naming_it() -> None:
    policy = PolicyIR("edgeOnly", {"a": 1}, "Route shop/r rule own")
    with pytest.raises(ValueError) as caught:
        build_filter(policy, FilterEnv(None))
    assert str(caught.value) == (
        'Route shop/r rule own: no plugin named "edgeOnly" is installed on this proxy '
        "(installed: jsonRewrite, testBodyTally, testRequestBody, testResponseBody, "
        "testStampAfterHeaders, testStampBeforeAuth)")


def test_a_bad_plugin_spec_in_the_ir_names_the_source_and_field() -> None:
    with pytest.raises(ValueError, match=r"^Route a: jsonRewrite\.maxBodySize: "):
        build_filter(PolicyIR("jsonRewrite", {"maxBodySize": "x"}, "Route a"), FilterEnv(None))


def test_a_proxy_runs_plugins_where_its_own_table_places_them() -> None:
    """An IR from a control plane that passed a plugin on unchecked lists it after
    ``headers``; the proxy, which has the plugin, runs it before ``auth`` as it says."""
    ((_, api_key),) = PolicyItem.model_validate({"apiKey": {}}).sections()
    policies = (PolicyIR("apiKey", api_key.model_dump(mode="json", by_alias=True), "r"),
                PolicyIR("testStampBeforeAuth", {}, "r"))
    loop = asyncio.new_event_loop()
    try:
        chain = compile_chain(policies, FilterEnv(loop))
    finally:
        loop.close()
    assert [type(f).__name__ for f in chain.filters] == ["StampBeforeAuth", "ApiKeyFilter"]
