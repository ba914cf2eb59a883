"""``propylon_tls_certificate_expiry_timestamp_seconds``: when each listener certificate ends.

Read by the supervisor at scrape time from the certificate files the served configuration
names (the files workers load); a file is parsed again only when its modification time
changes. Labels: ``listener`` (address:port) and ``file``, both from configuration. A file
that cannot be read is left out (the worker that loads it refuses the configuration anyway).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from propylon import ir

_cache: dict[str, tuple[int, float]] = {}  # path -> (mtime_ns, not-after timestamp)


def not_after(path: str) -> float | None:
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    cached = _cache.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
        stamp = float(ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (OSError, ssl.SSLError, KeyError, ValueError):
        return None
    _cache[path] = (mtime, stamp)
    return stamp


def certificate_families(snapshot: ir.SnapshotIR | None) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "propylon_tls_certificate_expiry_timestamp_seconds",
        "When a listener certificate stops being valid (its notAfter), Unix time.",
        labels=["listener", "file"])
    seen: set[tuple[str, str]] = set()
    for gateway in snapshot.gateways if snapshot is not None else ():
        for listener in gateway.listeners:
            if listener.tls is None:
                continue
            name = f"{listener.address}:{listener.port}"
            for certificate in listener.tls.certificates:
                stamp = not_after(certificate.cert_file)
                if stamp is not None and (name, certificate.cert_file) not in seen:
                    seen.add((name, certificate.cert_file))
                    family.add_metric([name, certificate.cert_file], stamp)
    yield family
