"""Tracing's pure parts: traceparent parsing, settings resolved against OTEL_* variables, the
configuration checks, the dropped-spans counters and their exposition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from propylon.ir import TracingIR
from propylon.observability.exposition import render
from propylon.observability.tracing import incoming_parent, parse_traceparent
from propylon.observability.tracing_export import resolve_tracing, traces_url
from propylon.observability.tracing_metrics import merge_tracing, tracing_families
from propylon.standalone import build_snapshot
from tests.support import resources as r

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param(f"00-{TRACE}-{SPAN}-01", (TRACE, SPAN, 1), id="sampled"),
    pytest.param(f"00-{TRACE}-{SPAN}-00", (TRACE, SPAN, 0), id="not-sampled"),
    pytest.param(f"00-{TRACE}-{SPAN}-03", (TRACE, SPAN, 3), id="other-flags-kept"),
    pytest.param(f" 00-{TRACE}-{SPAN}-01\t", (TRACE, SPAN, 1), id="surrounding-space"),
    pytest.param(f"cc-{TRACE}-{SPAN}-01-more", (TRACE, SPAN, 1), id="later-version"),
    pytest.param(f"cc-{TRACE}-{SPAN}-01", (TRACE, SPAN, 1), id="later-version-alone"),
    pytest.param(f"00-{TRACE}-{SPAN}-01-more", None, id="version-00-longer"),
    pytest.param(f"ff-{TRACE}-{SPAN}-01", None, id="version-ff"),
    pytest.param(f"00-{TRACE.upper()}-{SPAN}-01", None, id="upper-case"),
    pytest.param(f"00-{'0' * 32}-{SPAN}-01", None, id="zero-trace"),
    pytest.param(f"00-{TRACE}-{'0' * 16}-01", None, id="zero-span"),
    pytest.param(f"00-{TRACE[:-1]}-{SPAN}-01", None, id="short-trace"),
    pytest.param(f"00-{TRACE}-{SPAN}-1", None, id="short-flags"),
    pytest.param(f"00_{TRACE}_{SPAN}_01", None, id="wrong-separator"),
    pytest.param(f"cc-{TRACE}-{SPAN}-01more", None, id="later-version-no-dash"),
    pytest.param("", None, id="empty"),
])
def test_traceparent_parsing(value: str, expected: tuple[str, str, int] | None) -> None:
    parsed = parse_traceparent(value.encode())
    if expected is None:
        assert parsed is None
    else:
        assert parsed == (expected[0].encode(), expected[1].encode(), expected[2])


def test_the_incoming_context_leaves_the_forwarded_fields() -> None:
    headers = [(b"host", b"a"), (b"traceparent", f"00-{TRACE}-{SPAN}-01".encode()),
               (b"tracestate", b"v=1")]
    assert incoming_parent(headers) is not None
    assert headers == [(b"host", b"a"), (b"tracestate", b"v=1")]
    invalid = [(b"traceparent", b"nonsense"), (b"tracestate", b"v=1"), (b"x", b"y")]
    assert incoming_parent(invalid) is None
    assert invalid == [(b"x", b"y")]  # tracestate belongs to the invalid parent


@pytest.mark.parametrize(("spec", "environ", "expected"), [
    pytest.param(TracingIR(), {}, (None, "propylon", 1.0, True), id="defaults"),
    pytest.param(TracingIR("http://c:4318", 0.25, "edge"), {
        "OTEL_SERVICE_NAME": "env", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
        ("http://c:4318/v1/traces", "edge", 0.25, True), id="spec-wins"),
    pytest.param(TracingIR(), {"OTEL_SERVICE_NAME": "env", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
                 (None, "env", 0.5, True), id="environment"),
    pytest.param(TracingIR(), {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                               "OTEL_TRACES_SAMPLER_ARG": "0.01"},
                 (None, "propylon", 0.01, True), id="ratio-sampler"),
    pytest.param(TracingIR(), {"OTEL_TRACES_SAMPLER": "always_off"},
                 (None, "propylon", 0.0, True), id="always-off"),
    pytest.param(TracingIR(), {"OTEL_TRACES_SAMPLER_ARG": "2"},
                 (None, "propylon", 1.0, True), id="bad-ratio"),
    pytest.param(TracingIR(), {"OTEL_TRACES_SAMPLER": "jaeger_remote"},
                 (None, "propylon", 1.0, True), id="unknown-sampler"),
    pytest.param(TracingIR(sampling=0.0), {"OTEL_SDK_DISABLED": "true"},
                 (None, "propylon", 0.0, False), id="sdk-disabled"),
])
def test_settings_resolution(spec: TracingIR, environ: dict[str, str],
                             expected: tuple[Any, ...]) -> None:
    settings = resolve_tracing(spec, environ)
    assert (settings.endpoint, settings.service_name, settings.ratio,
            settings.export) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("http://c:4318", "http://c:4318/v1/traces"),
    ("http://c:4318/", "http://c:4318/v1/traces"),
    ("https://c/otlp/v1/traces", "https://c/otlp/v1/traces"),
    ("http://c:4318/custom", "http://c:4318/custom"),
])
def test_endpoint_gets_the_traces_path_when_it_has_none(url: str, expected: str) -> None:
    assert traces_url(url) == expected


@pytest.mark.parametrize(("tracing", "field", "message"), [
    pytest.param({"sampling": 1.5}, "spec.tracing.sampling", "less than or equal to 1",
                 id="ratio-above-1"),
    pytest.param({"sampling": -0.1}, "spec.tracing.sampling", "greater than or equal to 0",
                 id="ratio-below-0"),
    pytest.param({"otlpEndpoint": "collector:4318"}, "spec.tracing.otlpEndpoint",
                 "otlpEndpoint must be", id="no-scheme"),
    pytest.param({"otlpEndpoint": "http:///v1/traces"}, "spec.tracing.otlpEndpoint",
                 "otlpEndpoint must be", id="no-host"),
    pytest.param({"serviceName": ""}, "spec.tracing.serviceName", "at least 1 character",
                 id="empty-name"),
    pytest.param({"exporter": "zipkin"}, "spec.tracing.exporter", "", id="unknown-field"),
])
def test_bad_settings_are_located_errors(tmp_path: Path, tracing: dict[str, Any], field: str,
                                         message: str) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(r.dump(r.gateway(8080, tracing=tracing)))
    result = build_snapshot([path])
    found = [e for e in result.warnings + result.errors if field in e]
    assert found and message in found[0], result.warnings + result.errors
    assert result.snapshot is not None
    assert all(gateway.tracing is None for gateway in result.snapshot.gateways)


def test_settings_reach_the_ir_and_stay_out_of_it_when_unset(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(r.dump(r.gateway(8080, tracing={"otlpEndpoint": "http://c:4318",
                                                    "sampling": 0.01})))
    (traced,) = build_snapshot([path]).snapshot.gateways  # type: ignore[union-attr]
    assert traced.tracing == TracingIR("http://c:4318", 0.01, None)
    path.write_text(r.dump(r.gateway(8080)))
    plain = build_snapshot([path]).snapshot
    assert plain is not None and plain.gateways[0].tracing is None
    from propylon.ir import dumps

    assert "tracing" not in dumps(plain)  # configurations without it keep their versions


def test_counters_are_summed_and_exposed() -> None:
    merged = merge_tracing([
        {"tracing": {"exported": 5, "dropped": {"queue_full": 2, "export_failed": 1}}},
        {"tracing": {"exported": 1, "dropped": {"queue_full": 3, "export_failed": 0}}},
        {},
    ])
    assert merged == {"exported": 6, "dropped": {"queue_full": 5, "export_failed": 1}}
    text, _ = render(tracing_families({"tracing": merged}))
    assert b"propylon_tracing_spans_exported_total 6.0" in text
    assert b'propylon_tracing_spans_dropped_total{reason="queue_full"} 5.0' in text
    assert b'propylon_tracing_spans_dropped_total{reason="export_failed"} 1.0' in text
