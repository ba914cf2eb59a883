"""Upstream.spec.protocol: parsing, checks, IR translation and the JSON form's default."""

from __future__ import annotations

import pytest

from propylon.config import Upstream, load_text
from propylon.ir import UpstreamIR
from propylon.ir.codec import from_data, to_data
from propylon.translate.backends import build_upstream


def upstream(spec: str) -> str:
    return ("apiVersion: propylon.dev/v1\nkind: Upstream\nmetadata: {name: u}\nspec:\n"
            f"  endpoints: [{{address: 10.0.0.1, port: 80}}]\n  {spec}\n")


def build(spec: str) -> UpstreamIR:
    result = load_text(upstream(spec))
    assert result.errors == []
    (resource,) = result.resources
    assert isinstance(resource, Upstream)
    return build_upstream(resource)


def test_http2_translates_and_round_trips() -> None:
    built = build("protocol: HTTP2")
    assert built.protocol == "HTTP2"
    assert from_data(UpstreamIR, to_data(built)) == built


def test_http1_is_the_default_and_left_out_of_the_json_form() -> None:
    built = build("connectTimeout: 1s")
    assert built.protocol == "HTTP1"
    assert "protocol" not in to_data(built)


@pytest.mark.parametrize(("spec", "message"), [
    pytest.param("protocol: HTTP3", "protocol", id="unknown"),
    pytest.param("protocol: http2", "protocol", id="lower-case"),
    pytest.param("protocol: HTTP2\n  proxyProtocol: {version: 2}", "proxyProtocol",
                 id="with-proxy-protocol"),
])
def test_protocol_is_checked(spec: str, message: str) -> None:
    errors = load_text(upstream(spec)).errors
    assert any(message in f"{e.field} {e.message}" for e in errors), errors
