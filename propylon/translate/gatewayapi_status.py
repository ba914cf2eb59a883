"""Statuses of the Kubernetes objects a configuration was given, as Gateway API conditions.

Conversion (``config/gatewayapi.py``) found some conditions; translation decided the rest:
a converted Gateway that is served is ``Programmed=True``, one that is Invalid or disabled
``Programmed=False Invalid``; a converted Route that translation made Invalid gets
``Accepted=False UnsupportedValue`` with translation's reasons. The statuses of the
converted resources are replaced by one status per object as written (``HTTPRoute ns/name``,
``Ingress ns/name``; a Gateway keeps its kind and key), whose reasons are its conditions,
``scope: Type=Status Reason: message``, then notes such as a listener's attachedRoutes.
It is ``Invalid`` as ``k8s_status.refused`` says: a false condition of its own, or no
parentRef of a route accepting it. The Upstreams made from Services keep no status
of their own: a Service has no Gateway API status, and its problems are the routes'
``ResolvedRefs``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from propylon.config import ConfigError
from propylon.config.gatewayapi import Expansion
from propylon.config.k8s_status import ACCEPTED, PROGRAMMED, Condition, refused, status_lines
from propylon.ir import StatusIR

_SUMMARY_KINDS = ("Gateway", "HTTPRoute", "GRPCRoute", "Ingress")


def gateway_api_statuses(
    statuses: Sequence[StatusIR], expansion: Expansion
) -> tuple[StatusIR, ...]:
    """``statuses`` with those of converted resources replaced by their objects'."""
    if not expansion.origins and not expansion.findings.objects:
        return tuple(statuses)
    findings = expansion.findings
    kept: list[StatusIR] = []
    own: dict[tuple[str, str], StatusIR] = {}  # an object's own, from containment
    gateways: dict[tuple[str, str], set[str]] = {}
    for status in statuses:
        origin = expansion.origins.get(f"{status.kind} {status.key}")
        if origin is None:
            if (status.kind, status.key) in findings.objects:
                own[(status.kind, status.key)] = status  # a contained object: one status
            else:
                kept.append(status)
            continue
        if origin.kind not in _SUMMARY_KINDS:
            continue  # an Upstream made from a Service
        gateways.setdefault((origin.kind, origin.key), set()).update(status.gateways)
        _translated(status, origin.kind, origin.key, expansion)
    # most objects have the same conditions (accepted by the same parent, references
    # resolved): their lines are written once
    judged: dict[tuple[tuple[str, Condition], ...], tuple[tuple[str, ...], bool]] = {}
    for (kind, key), entry in findings.objects.items():
        if kind not in _SUMMARY_KINDS:
            continue
        held = own.pop((kind, key), None)
        conditions = tuple(entry.conditions())
        verdict = judged.get(conditions)
        if verdict is None:
            verdict = judged[conditions] = (status_lines(conditions), refused(conditions))
        lines, invalid = verdict
        if entry.notes:
            lines += tuple(entry.notes)
        if held is not None:  # its rejection (the loader's errors) and containment's notes
            lines = (*held.reasons, *[line for line in lines if line not in held.reasons])
            invalid = invalid or held.state == "Invalid"
            gateways.setdefault((kind, key), set()).update(held.gateways)
        kept.append(StatusIR(kind, key, "Invalid" if invalid else "Accepted", lines,
                             tuple(sorted(gateways.get((kind, key), ())))))
    kept += own.values()
    return tuple(sorted(kept, key=lambda s: (s.kind, s.key)))


def _translated(status: StatusIR, kind: str, key: str, expansion: Expansion) -> None:
    """Add what translation decided about a converted resource to its object's conditions."""
    findings = expansion.findings
    reasons = "; ".join(status.reasons)
    if kind == "Gateway":
        if status.state == "Accepted":
            findings.set(kind, key, Condition(PROGRAMMED, True, "Programmed"))
        else:
            findings.set(kind, key, Condition(PROGRAMMED, False, "Invalid", reasons))
    elif status.state != "Accepted":
        findings.set(kind, key, Condition(ACCEPTED, False, "UnsupportedValue", reasons))


def located_issues(
    issues: Sequence[ConfigError], expansion: Expansion
) -> tuple[ConfigError, ...]:
    """Conversion's issues, then translation's, those of a converted resource named as the
    object it comes from (its file and line are already the object's)."""
    named = []
    for issue in issues:
        origin = expansion.origins.get(f"{issue.kind} {issue.name}")
        if origin is not None:
            issue = dataclasses.replace(issue, kind=origin.kind, name=origin.key)
        named.append(issue)
    return (*expansion.issues, *named)

