"""Config builders shared by the edge tests: listeners with limits and TLS."""

from __future__ import annotations

from typing import Any

from tests.support import resources as r
from tests.support.tls import CertFiles


def listener_gateway(port: int, *, extra_listeners: list[dict] | None = None,
                     **listener: Any) -> dict:
    """``r.gateway`` whose first listener gets ``listener`` fields (``limits``, ``tls``,
    ``protocol``...), plus ``extra_listeners`` as given."""
    doc = r.gateway(port)
    doc["spec"]["listeners"][0].update(listener)
    doc["spec"]["listeners"] += extra_listeners or []
    return doc


def https(*certs: CertFiles, client_ca: str | None = None, mode: str = "required") -> dict:
    """``protocol`` and ``tls`` fields of an HTTPS listener serving ``certs`` (first = default)."""
    tls: dict[str, Any] = {
        "certificates": [{"certFile": str(c.cert), "keyFile": str(c.key)} for c in certs]
    }
    if client_ca is not None:
        tls["clientValidation"] = {"caFile": client_ca, "mode": mode}
    return {"protocol": "HTTPS", "tls": tls}


def forward_all(upstream_name: str, port: int, **upstream_spec: Any) -> list[dict]:
    """A Route sending everything to one Upstream on 127.0.0.1:``port``."""
    return [
        r.route("all", rules=[r.rule(forward=r.forward(upstream_name))]),
        r.upstream(upstream_name, port, **upstream_spec),
    ]
