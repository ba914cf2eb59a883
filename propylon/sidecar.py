"""``propylon sidecar``: a one-service gateway in front of a local app (the microgateway).

The sidecar's own resources are generated: a Gateway ``sidecar`` listening on ``--listen``,
one Route sending everything to an Upstream ``app`` at ``127.0.0.1:APP_PORT``. The team's
``--policy`` files add what it wants on top, as ordinary resources: Policy documents target
``{kind: Gateway, name: sidecar}`` (or the Route ``app``), Consumers carry credentials, and a
document that is just a list of policy items (``- rateLimit: {...}``) is applied at the
Gateway level. The policy files are watched like ``propylon run``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from propylon.config import ConfigError, load_text
from propylon.config._yaml import parse_documents
from propylon.standalone import BuildResult, build_from_resources

SIDECAR_NAMESPACE = "default"


def sidecar_resources(app_port: int, address: str, port: int, inline: list[object]) -> str:
    """The generated Gateway, Route and Upstream as YAML text."""
    gateway = {
        "apiVersion": "propylon.dev/v1",
        "kind": "Gateway",
        "metadata": {"name": "sidecar", "namespace": SIDECAR_NAMESPACE},
        "spec": {
            "listeners": [{"name": "app", "port": port, "address": address}],
            "policies": inline,
        },
    }
    route = {
        "apiVersion": "propylon.dev/v1",
        "kind": "Route",
        "metadata": {"name": "app", "namespace": SIDECAR_NAMESPACE},
        "spec": {"rules": [{"name": "app", "forward": {"backends": [{"upstream": "app"}]}}]},
    }
    upstream = {
        "apiVersion": "propylon.dev/v1",
        "kind": "Upstream",
        "metadata": {"name": "app", "namespace": SIDECAR_NAMESPACE},
        "spec": {"endpoints": [{"address": "127.0.0.1", "port": app_port}]},
    }
    return yaml.safe_dump_all([gateway, route, upstream], sort_keys=False)


def build_sidecar_snapshot(
    app_port: int, address: str, port: int, policy_files: Sequence[str | Path]
) -> BuildResult:
    inline: list[object] = []
    resources = []
    errors: list[str] = []
    for path in policy_files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        # read as every configuration file is (``x-resp: yes`` stays the string written)
        documents, parse_errors = parse_documents(text, str(path))
        inline += [item for doc in documents if isinstance(doc.data, list) for item in doc.data]
        documents = [doc for doc in documents if not isinstance(doc.data, list)]
        loaded = load_text(text, str(path), (documents, parse_errors))
        resources += loaded.resources
        errors += [str(e) for e in loaded.errors]
    generated = load_text(sidecar_resources(app_port, address, port, inline), "<sidecar>")
    errors += [_inline_error(e) for e in generated.errors]
    if errors:
        return BuildResult(None, errors)
    return build_from_resources([*generated.resources, *resources])


def _inline_error(error: ConfigError) -> str:
    """Errors in the generated Gateway come from the inline policy items of --policy files."""
    return f"--policy: {error.field}: {error.message}" if error.field else str(error)
