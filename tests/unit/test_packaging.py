"""Packaging: the kustomize base and overlay render (``kubectl kustomize``, offline) into
consistent objects whose commands the CLI accepts; the Helm chart mirrors them and its values
satisfy ``values.schema.json`` (Helm is not installable here: its templates are linted for
structure, not rendered); the systemd unit passes ``systemd-analyze verify``; the Dockerfile
runs ``propylon run`` as a non-root user with a health check on ``/ready``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from propylon.cli.main import app

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUSTOMIZE = [DEPLOY / "kustomize" / "base", DEPLOY / "kustomize" / "overlays" / "example"]
CHART = DEPLOY / "helm" / "propylon"


def rendered(path: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (Debian: kubernetes-client)")
    result = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def cli_options(command: str) -> set[str]:
    click_app = typer.main.get_command(app)
    params = click_app.commands[command].params  # type: ignore[attr-defined]
    return {opt for param in params for opt in param.opts + param.secondary_opts}


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("path", KUSTOMIZE, ids=lambda p: p.name)
def test_kustomize_renders_consistent_objects(path: Path) -> None:
    docs = rendered(path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "Secret", "Service", "Service",
                            "Deployment", "Deployment", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget", "PodDisruptionBudget", "ServiceMonitor"])
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for deployment in deployments.values():
        template = deployment["spec"]["template"]
        assert _labels_match(deployment["spec"]["selector"]["matchLabels"],
                             template["metadata"]["labels"])
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        container = template["spec"]["containers"][0]
        command = container["args"][0]
        flags = {a for a in container["args"] if a.startswith("--")}
        assert flags <= cli_options(command), flags - cli_options(command)
        ports = {p["name"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports
    proxy = deployments["propylon-proxy-edge"]["spec"]["template"]["spec"]["containers"][0]
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/live"
    for doc in docs:
        if doc["kind"] == "HorizontalPodAutoscaler":
            assert doc["spec"]["scaleTargetRef"]["name"] in deployments
        if doc["kind"] in ("PodDisruptionBudget", "Service"):
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert any(_labels_match(selector, d["spec"]["template"]["metadata"]["labels"])
                       for d in deployments.values()), doc["metadata"]["name"]
    secret_names = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    for deployment in deployments.values():
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert {v["secret"]["secretName"] for v in volumes if "secret" in v} <= secret_names


def test_helm_chart_mirrors_the_kustomize_base() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "propylon"
    templates = "\n".join(p.read_text() for p in sorted((CHART / "templates").glob("*")))
    chart_kinds = set(re.findall(r"^kind: (\w+)", templates, re.MULTILINE))
    base_kinds = {d["kind"] for f in (DEPLOY / "kustomize" / "base").glob("*.yaml")
                  if f.name != "kustomization.yaml"
                  for d in yaml.safe_load_all(f.read_text()) if d}
    assert base_kinds - {"Namespace", "ServiceAccount"} == chart_kinds - {"Secret"}
    for template in (CHART / "templates").glob("*.yaml"):
        text = template.read_text()
        opened = len(re.findall(r"\{\{-?\s*(if|range|with|define)\b", text))
        closed = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", text))
        assert opened == closed, template.name
        assert "{{" not in re.sub(r"\{\{.*?\}\}", "", text), template.name  # all closed


def _check(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """The subset of JSON Schema values.schema.json uses (no jsonschema here)."""
    errors: list[str] = []
    types = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}
    if "type" in schema and not isinstance(value, types[schema["type"]]):
        return [f"{where}: not {schema['type']}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: not one of {schema['enum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{where}: does not match {schema['pattern']}")
    if isinstance(value, int) and not (schema.get("minimum", value) <= value
                                       <= schema.get("maximum", value)):
        errors.append(f"{where}: out of range")
    if isinstance(value, dict):
        errors += [f"{where}.{k}: required" for k in schema.get("required", ()) if k not in value]
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                errors += _check(item, properties[key], f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}.{key}: not allowed")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: too few items")
        errors += [e for i, item in enumerate(value)
                   for e in _check(item, schema.get("items", {}), f"{where}[{i}]")]
    return errors


def test_helm_values_satisfy_the_schema_and_bad_values_do_not() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert _check(values, schema, "values") == []
    bad = json.loads(json.dumps(values))
    bad["controlPlane"]["store"] = "redis://x"
    bad["gateways"][0]["name"] = "Bad_Name"
    bad["gateways"][0]["replica"] = 2
    assert len(_check(bad, schema, "values")) == 3


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (DEPLOY / "systemd" / "propylon.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    # the unit names /opt/propylon; verify it against this checkout's virtualenv
    local = tmp_path / "propylon.service"
    local.write_text(unit.replace("/opt/propylon/bin", str(REPO / ".venv" / "bin")))
    result = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_dockerfile_runs_propylon_as_a_non_root_user() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert "/ready" in text.split("HEALTHCHECK", 1)[1]
    assert 'ENTRYPOINT ["propylon"]' in text and 'CMD ["run"' in text
    run_flags = set(re.findall(r'"(--[a-z-]+)"', text.split("CMD", 1)[1]))
    assert run_flags <= cli_options("run")
