"""The policy type table is the one source of policy names, settings models, filters and order."""

from __future__ import annotations

import asyncio
import typing
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ValidationError

import propylon
from propylon.config import load_text
from propylon.config.policy import PolicyItem, PolicySections
from propylon.filters import Filter, FilterEnv, build_filter, filter_class
from propylon.ir import PolicyIR
from propylon.policies.headers import HeadersSettings
from propylon.policies.table import POLICY_ORDER, POLICY_TYPES, PolicyTable, PolicyType
from propylon.policies.traffic import FaultInjectionPolicy
from propylon.schema import IR_CONTEXT, Model
from tests.unit.test_config import doc

# mypyc keeps no annotations on compiled functions nor a __func__ on their class methods; the
# pure-Python pass of scripts/test runs these (PROPYLON_NO_EXTENSIONS=1)
needs_python_functions = pytest.mark.skipif(
    propylon.EXTENSIONS, reason="compiled filters: checked by the pure-Python pass")

# One section of every supported type, as written in YAML (durations as strings).
EXAMPLES: dict[str, dict[str, Any]] = {
    "ipFilter": {"allow": ["10.0.0.0/8"], "deny": ["10.1.0.0/16"]},
    "cors": {"allowOrigins": ["https://a.example.com"], "allowHeaders": ["X-A"], "maxAge": "10m"},
    "jwt": {"jwks": {"url": "https://idp.example/jwks", "timeout": "2s"}, "clockSkew": "1m",
            "claimsToHeaders": [{"claim": "sub", "header": "X-Sub"}]},
    "apiKey": {"query": "api_key", "consumers": {"allow": ["a"], "denyLabels": {"s": "off"}}},
    "basicAuth": {"realm": "shop"},
    "extAuth": {"url": "http://127.0.0.1:9/check", "timeout": "250ms",
                "cache": {"ttl": "5s", "keyHeaders": ["authorization"]}},
    "rateLimit": {"limits": [{"requests": 10, "per": "1s", "key": ["client_ip", "header:X-U"]}],
                  "redis": {"timeout": "100ms"}},
    "requestLimits": {"maxBodySize": 1024},
    "headers": {"request": {"set": {"X-A": "b"}, "remove": ["x-debug"]},
                "response": {"add": {"x-served-by": "edge"}}},
    "faultInjection": {"delay": {"fixed": "100ms", "percent": 50}, "abort": {"status": 500}},
    "compression": {"algorithms": ["br", "gzip"], "minBytes": 512,
                    "contentTypes": ["application/json", "text/*"]},
    "transform": {"request": {"query": {"set": {"a": "1"}, "remove": ["b"]},
                              "body": {"json": {"set": {"/x": [1]}, "remove": ["/y"]}}},
                  "response": {"body": {"template": "{{ body | tojson }}",
                                        "contentType": "application/json"}},
                  "maxBodyBytes": "64KiB"},
    "waf": {"mode": "detect", "paranoiaLevel": 2, "anomalyThreshold": 10,
            "ruleExclusions": [942100], "rules": ['SecAction "id:1,phase:1,pass,nolog"'],
            "requestBodyLimit": "256KiB"},
    "cache": {"store": "redis", "maxEntryBytes": "64KiB", "maxBytes": "1MiB", "defaultTtl": "10s",
              "methods": ["GET"], "keyHeaders": ["X-Tenant"],
              "redis": {"address": "127.0.0.1:6380", "timeout": "50ms"}},
}
SUPPORTED = [kind for kind in POLICY_TYPES if kind.supported]


def test_order_and_phases_are_design_s() -> None:
    assert POLICY_TYPES.phases == (
        "ipFilter", "waf", "cors", "auth", "rateLimit", "requestLimits", "transform", "headers",
        "cache", "compression", "faultInjection",
    )
    assert POLICY_ORDER == (
        "ipFilter", "waf", "cors", "jwt", "apiKey", "basicAuth", "extAuth", "rateLimit",
        "requestLimits", "transform", "headers", "cache", "compression", "faultInjection",
    )
    assert [POLICY_TYPES.rank(name) for name in POLICY_ORDER] == list(range(len(POLICY_ORDER)))


def test_every_config_section_is_a_row_and_every_row_a_section() -> None:
    """One field per built-in row, and ``plugins``, where plugins' sections are listed."""
    aliases = [field.alias for field in PolicySections.model_fields.values()]
    assert aliases == ["plugins", *POLICY_ORDER]


@needs_python_functions
@pytest.mark.parametrize("kind", SUPPORTED, ids=lambda k: k.name)
def test_every_supported_type_has_a_filter_that_takes_its_settings(kind: PolicyType) -> None:
    cls = filter_class(kind)  # imported from the row's path, checked against the row
    assert issubclass(cls, Filter) and cls.policy_type == kind.name
    model = kind.settings
    assert model is not None and issubclass(model, Model) and cls.settings_model is model
    hints = typing.get_type_hints(cls.from_spec)
    assert hints["settings"] is model  # from_spec is typed with what the table gives it
    assert kind.name in EXAMPLES  # and the round-trip test below covers it


@pytest.mark.parametrize("name", [k.name for k in POLICY_TYPES if not k.supported])
def test_types_not_built_yet_are_refused_with_a_clear_error(name: str) -> None:
    kind = POLICY_TYPES[name]
    assert not kind.supported and kind.section_model is None
    text = doc("Policy", f"targetRefs: [{{kind: Gateway, name: g}}]\n{name}: {{a: 1}}")
    errors = [(e.field, e.message) for e in load_text(text).errors]
    assert errors == [(f"spec.{name}", f'policy "{name}" is not supported yet')]
    with pytest.raises(ValueError, match=f'policy "{name}" is not supported yet'):
        build_filter(PolicyIR(name, {}, "Route a"), FilterEnv(None))


@pytest.mark.parametrize("kind", SUPPORTED, ids=lambda k: k.name)
def test_a_section_round_trips_through_the_ir_form(kind: PolicyType) -> None:
    ((name, section),) = PolicyItem.model_validate({kind.name: EXAMPLES[kind.name]}).sections()
    assert name == kind.name and isinstance(section, kind.section_model or BaseModel)
    spec = section.model_dump(mode="json", by_alias=True)  # what translation puts in the IR
    settings = kind.settings_from(spec)
    assert isinstance(settings, kind.settings or BaseModel)
    assert settings.model_dump(mode="json", by_alias=True) == spec
    if kind.section is None:  # one model for both forms: the same object comes back
        assert settings == section


def test_durations_are_numbers_only_in_the_ir_form() -> None:
    dumped = {"delay": {"fixed": 0.1, "percent": 100.0}}
    assert FaultInjectionPolicy.model_validate(dumped, context=IR_CONTEXT).delay.fixed == 0.1
    with pytest.raises(ValidationError, match="a duration is a string like"):
        FaultInjectionPolicy.model_validate(dumped)


class Recorder(Filter):
    """A plugin-shaped filter: its own settings model, placed after ``headers``."""

    class Settings(Model):
        tag: str = "default-tag"
        ttl: float = 1.0

    policy_type = "recorder"
    settings_model = Settings
    built: ClassVar[list[Any]] = []

    @classmethod
    def from_spec(cls, settings: Settings, source: str, env: FilterEnv) -> Recorder:
        cls.built.append(settings)
        return cls(source)


RECORDER = PolicyType("recorder", "headers", Recorder.Settings, f"{__name__}:Recorder",
                      placement="after")


def test_a_filter_gets_its_typed_settings_with_the_model_s_defaults() -> None:
    table = POLICY_TYPES.extended([RECORDER])
    filter_ = build_filter(PolicyIR("recorder", {"tag": "x"}, "Route a"), FilterEnv(None), table)
    assert isinstance(filter_, Recorder)
    assert Recorder.built == [Recorder.Settings(tag="x", ttl=1.0)]
    assert table.rank("headers") < table.rank("recorder") < table.rank("cache")
    assert "recorder" not in POLICY_TYPES.names  # the built-in table is not changed


@pytest.mark.parametrize(
    ("section", "read"),
    [
        pytest.param({"jwt": {"keys": [{"file": "k.pem"}], "algorithms": []}},
                     lambda s: s.algorithms == ["RS256", "ES256", "EdDSA"], id="jwt-algorithms"),
        pytest.param({"jwt": {"keys": [{"file": "k.pem"}], "tokenFrom": []}},
                     lambda s: [(t.header, t.prefix) for t in s.token_from]
                     == [("authorization", "Bearer ")], id="jwt-token-from"),
        pytest.param({"apiKey": {}}, lambda s: s.header == "x-api-key", id="api-key-header"),
        pytest.param({"extAuth": {"url": "http://a/"}},
                     lambda s: (s.timeout, s.status_on_error, s.max_connections) == (1.0, 403, 64),
                     id="ext-auth"),
    ],
)
def test_defaults_live_in_the_model(section: dict[str, Any], read: Any) -> None:
    ((_, settings),) = PolicyItem.model_validate(section).sections()
    assert read(settings)


def test_plugin_rows_keep_names_unique_and_phases_known() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        POLICY_TYPES.extended([PolicyType("cors", "cors")])
    with pytest.raises(ValueError, match="no phase 'body'"):
        PolicyTable([PolicyType("recorder", "body", placement="before")])
    with pytest.raises(ValueError, match="settings and filter go together"):
        PolicyType("recorder", "headers", Recorder.Settings)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        pytest.param(PolicyType("other", "headers", Recorder.Settings, f"{__name__}:Recorder"),
                     "is for policy type 'recorder'", id="other-name"),
        pytest.param(PolicyType("recorder", "headers", HeadersSettings, f"{__name__}:Recorder"),
                     "with settings Settings", id="other-settings"),
        pytest.param(PolicyType("recorder", "headers", Recorder.Settings, f"{__name__}:Model"),
                     "is not a Filter class", id="not-a-filter"),
    ],
)
def test_a_row_s_filter_must_say_the_row_s_name_and_settings(row: PolicyType,
                                                               message: str) -> None:
    with pytest.raises(TypeError, match=message):
        filter_class(row)


@needs_python_functions
@pytest.mark.parametrize("kind", SUPPORTED, ids=lambda k: k.name)
def test_built_in_filters_get_typed_settings(kind: PolicyType,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    section = PolicyItem.model_validate({kind.name: EXAMPLES[kind.name]}).sections()[0][1]
    policy = PolicyIR(kind.name, section.model_dump(mode="json", by_alias=True), "Route a")
    cls, given = filter_class(kind), []
    build = cls.from_spec.__func__  # type: ignore[attr-defined]

    def spy(cls_: type[Filter], settings: Any, source: str, env: FilterEnv) -> Filter:
        given.append(settings)
        return build(cls_, settings, source, env)  # type: ignore[no-any-return]

    monkeypatch.setattr(cls, "from_spec", classmethod(spy))
    loop = asyncio.new_event_loop()  # extAuth's client and jwt's JWKS cache are built here
    try:
        assert isinstance(build_filter(policy, FilterEnv(loop)), cls)
    finally:
        loop.close()
    assert [type(s) for s in given] == [kind.settings]


def test_a_bad_ir_spec_names_the_source_and_field_never_the_value() -> None:
    spec = {"request": {"set": {"authorization": {"secret": "s3cr3t", "extra": "s3cr3t"}}}}
    with pytest.raises(ValueError) as caught:
        build_filter(PolicyIR("headers", spec, "Gateway a/b"), FilterEnv(None))
    message = str(caught.value)
    assert message.startswith("Gateway a/b: headers.request.set.authorization")
    assert "s3cr3t" not in message


def test_resolved_secrets_stay_out_of_reprs() -> None:
    settings = HeadersSettings.model_validate(
        {"request": {"set": {"authorization": {"secret": "Bearer s3cr3t"}}}}, context=IR_CONTEXT)
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)


def test_equal_specs_of_a_built_in_type_share_their_settings() -> None:
    """A configuration repeats a few policies over thousands of rules: a built-in type's
    settings (frozen, validated from the spec alone) are made once per distinct spec, an
    invalid spec is refused every time."""
    headers = next(kind for kind in POLICY_TYPES if kind.name == "headers")
    spec = {"response": {"set": {"x-beta": "yes"}}}
    first = headers.settings_from(spec)
    again = headers.settings_from({"response": {"set": {"x-beta": "yes"}}})
    other = headers.settings_from({"response": {"set": {"x-beta": "no"}}})
    assert again is first and other is not first and other != first
    for _ in range(2):
        with pytest.raises(ValidationError):
            headers.settings_from({"response": {"set": {"bad name": "x"}}})
