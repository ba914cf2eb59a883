"""listeners[].proxyProtocol: parsing, checks, IR translation, and the JSON form's default."""

from __future__ import annotations

import textwrap

import pytest

from propylon.config import Gateway, load_text
from propylon.ir import ListenerIR, ProxyProtocolIR
from propylon.ir.codec import from_data, to_data
from propylon.proxy.worker_state import proxy_protocol_settings
from propylon.translate.gateway import translate_listeners


def gateway(listener: str) -> str:
    spec = textwrap.indent(f"listeners: [{listener}]", "  ")
    return f"apiVersion: propylon.dev/v1\nkind: Gateway\nmetadata: {{name: g}}\nspec:\n{spec}\n"


def test_proxy_protocol_translates() -> None:
    result = load_text(gateway(
        "{name: web, port: 80, proxyProtocol: {mode: required, versions: [2], "
        "trustedSources: [10.0.0.0/8, '::/0']}}"))
    assert result.errors == []
    (resource,) = result.resources
    assert isinstance(resource, Gateway)
    (listener,) = translate_listeners(resource)
    assert listener.proxy_protocol == ProxyProtocolIR("required", (2,), ("10.0.0.0/8", "::/0"))
    settings = proxy_protocol_settings(listener.proxy_protocol)
    assert settings is not None and not settings.optional
    assert settings.trusts("10.1.2.3") and settings.trusts("::ffff:10.1.2.3")
    assert settings.trusts("2001:db8::1")


def test_https_listeners_take_it() -> None:
    result = load_text(gateway(
        "{name: a, port: 443, protocol: HTTPS, tls: {certificates: [{certFile: c, keyFile: k}]},"
        " proxyProtocol: {mode: required, trustedSources: [10.0.0.0/8]}}"))
    assert result.errors == []


def test_off_is_the_default_and_left_out_of_the_json_form() -> None:
    listener = ListenerIR("web", 80)
    assert listener.proxy_protocol.mode == "off"
    assert proxy_protocol_settings(listener.proxy_protocol) is None
    assert "proxy_protocol" not in to_data(listener)
    on = ListenerIR("web", 80, proxy_protocol=ProxyProtocolIR("optional", (1,), ("10.0.0.0/8",)))
    assert from_data(ListenerIR, to_data(on)) == on


@pytest.mark.parametrize(("listener", "message"), [
    pytest.param("{name: a, port: 80, proxyProtocol: {mode: required}}",
                 "proxyProtocol needs trustedSources", id="no-sources"),
    pytest.param("{name: a, port: 80, proxyProtocol: {mode: on, trustedSources: [10.0.0.0/8]}}",
                 "mode", id="bad-mode"),
    pytest.param("{name: a, port: 80, proxyProtocol: {mode: optional, versions: [3], "
                 "trustedSources: [10.0.0.0/8]}}", "versions", id="bad-version"),
    pytest.param("{name: a, port: 80, proxyProtocol: {mode: optional, versions: [], "
                 "trustedSources: [10.0.0.0/8]}}", "versions", id="no-versions"),
    pytest.param("{name: a, port: 80, proxyProtocol: {mode: optional, "
                 "trustedSources: [10.0.0.300/8]}}", "trustedSources", id="bad-cidr"),
])
def test_proxy_protocol_is_checked(listener: str, message: str) -> None:
    errors = load_text(gateway(listener)).errors
    assert errors, listener
    assert any(message in f"{e.field} {e.message}" for e in errors), errors


def upstream(spec: str) -> str:
    return ("apiVersion: propylon.dev/v1\nkind: Upstream\nmetadata: {name: u}\nspec:\n"
            f"  endpoints: [{{address: 10.0.0.1, port: 80}}]\n  {spec}\n")


def test_upstream_proxy_protocol_translates() -> None:
    from propylon.config import Upstream
    from propylon.ir import UpstreamIR
    from propylon.translate.backends import build_upstream

    (resource,) = load_text(upstream("proxyProtocol: {version: 2}")).resources
    assert isinstance(resource, Upstream)
    built = build_upstream(resource)
    assert built.proxy_protocol_version == 2
    assert from_data(UpstreamIR, to_data(built)) == built
    (plain,) = load_text(upstream("connectTimeout: 1s")).resources
    assert isinstance(plain, Upstream)
    assert "proxy_protocol_version" not in to_data(build_upstream(plain))


@pytest.mark.parametrize(("spec", "message"), [
    pytest.param("proxyProtocol: {version: 3}", "version", id="bad-version"),
    pytest.param("proxyProtocol: {}", "version", id="no-version"),
])
def test_upstream_proxy_protocol_is_checked(spec: str, message: str) -> None:
    errors = load_text(upstream(spec)).errors
    assert any(message in f"{e.field} {e.message}" for e in errors), errors
