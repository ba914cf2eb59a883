"""The rule set of one ``waf`` policy: engine settings, the CRS setup, the CRS rules, the
shipped Log4Shell rules, the policy's own rules and exclusions, compiled once.

Load order matters within a phase, so the parts go in this order:
1. engine directives (rule engine on in both modes: ``detect`` is decided by the filter, which
   still learns what would have been blocked) and the body processors of ModSecurity's
   recommended configuration (JSON and XML bodies parsed into ARGS and XML, a body that fails
   to parse rejected: otherwise a malformed body would hide its content from every rule);
2. the CRS setup: default actions, paranoia level, anomaly thresholds (what crs-setup.conf
   holds; Debian's /etc copy is not read, so a policy means the same on every machine);
3. the CRS rule files up to the Java rules, then the Log4Shell rules when the CRS lacks them;
4. the policy's ``rules``, before the CRS's blocking evaluation so that rules that add to the
   anomaly score count;
5. the remaining CRS files, then ``SecRuleRemoveById`` for ``ruleExclusions``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from propylon.policies.waf import WafPolicy
from propylon.waf import log4shell
from propylon.waf._libmodsecurity import (
    DEBIAN_PACKAGES,
    LibraryMissing,
    RulesError,
    RuleSet,
    engine,
)
from propylon.waf.report import known_ids

CRS_RULES = Path(os.environ.get("PROPYLON_CRS_RULES", "/usr/share/modsecurity-crs/rules"))
_FIRST_AFTER_USER_RULES = "REQUEST-949"  # files from here on come after the policy's rules

_BODY_PROCESSORS = r"""
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" \
    "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/(?:[a-z0-9.+-]*\+)?json" \
    "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule &REQUEST_HEADERS:Content-Type "@eq 1" \
    "id:200004,phase:1,t:none,pass,nolog,chain"
    SecRule REQUEST_HEADERS:Content-Type "@rx ^application/[a-z0-9.+-]*\+json(?:[;\s]|$)" \
        "t:none,t:lowercase,ctl:ruleRemoveById=920420"
SecRule REQBODY_ERROR "!@eq 0" \
    "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',\
    logdata:'%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" \
    "id:200003,phase:2,t:none,log,deny,status:400,\
    msg:'Multipart request body failed strict validation'"
"""


def engine_directives(policy: WafPolicy) -> str:
    limit = policy.request_body_limit
    return "\n".join((
        "SecRuleEngine On",
        "SecRequestBodyAccess On",
        f"SecRequestBodyLimit {limit}",
        f"SecRequestBodyNoFilesLimit {limit}",
        "SecRequestBodyLimitAction ProcessPartial",
        "SecResponseBodyAccess Off",
        "SecArgumentSeparator &",
        "SecCookieFormat 0",
        "SecPcreMatchLimit 100000",
        "SecPcreMatchLimitRecursion 100000",
        "SecAuditEngine Off",
        _BODY_PROCESSORS,
    ))


# An API gateway's traffic: REST methods and API media types are ordinary (CRS 3.3 allows
# only GET HEAD POST OPTIONS, and no binary, JSON Patch or merge-patch bodies, by default).
# Besides this list, any structured-syntax JSON type (application/...+json: vnd.api, hal,
# geo, scim, ...), parsed as JSON by rule 200001, is let through CRS rule 920420 by rule
# 200004 (when the request has one Content-Type).
ALLOWED_METHODS = "GET HEAD POST OPTIONS PUT PATCH DELETE"
ALLOWED_CONTENT_TYPES = (
    "application/x-www-form-urlencoded", "multipart/form-data", "multipart/related",
    "text/xml", "application/xml", "application/soap+xml", "application/json",
    "application/cloudevents+json", "application/cloudevents-batch+json",
    "application/merge-patch+json", "application/json-patch+json", "application/ld+json",
    "application/problem+json", "application/x-ndjson", "application/octet-stream",
)


def _content_types() -> str:
    return " ".join(f"|{t}|" for t in ALLOWED_CONTENT_TYPES)


def crs_setup(policy: WafPolicy) -> str:
    pl, threshold = policy.paranoia_level, policy.anomaly_threshold
    return f"""
SecDefaultAction "phase:1,log,auditlog,pass"
SecDefaultAction "phase:2,log,auditlog,pass"
SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={pl}"
SecAction "id:900110,phase:1,nolog,pass,t:none,\\
    setvar:tx.inbound_anomaly_score_threshold={threshold},\\
    setvar:tx.outbound_anomaly_score_threshold=4"
SecAction "id:900200,phase:1,nolog,pass,t:none,\\
    setvar:'tx.allowed_methods={ALLOWED_METHODS}'"
SecAction "id:900220,phase:1,nolog,pass,t:none,\\
    setvar:'tx.allowed_request_content_type={_content_types()}'"
SecAction "id:900990,phase:1,nolog,pass,t:none,setvar:tx.crs_setup_version=334"
"""


@functools.cache
def crs_files(directory: Path = CRS_RULES) -> tuple[Path, ...]:
    files = tuple(sorted(directory.glob("*.conf")))
    if not files:
        raise LibraryMissing(
            f"the waf policy needs the OWASP CRS rules in {directory}: install the Debian "
            f"packages {DEBIAN_PACKAGES} (apt-get install {DEBIAN_PACKAGES})")
    return files


@functools.cache
def crs_has_log4shell_rules(directory: Path = CRS_RULES) -> bool:
    return any("id:944150" in f.read_text(errors="replace") for f in crs_files(directory)
               if f.name.startswith("REQUEST-944"))


Part = tuple[str, str]  # (where it comes from, for errors; the rules' text)


def rule_parts(policy: WafPolicy, directory: Path = CRS_RULES) -> tuple[Part, ...]:
    """The rule set's text, part by part: each part is compiled on its own, so a policy rule
    that ModSecurity refuses is named (``waf.rules[i]``)."""
    files = crs_files(directory)
    parts: list[Part] = [("waf engine settings", engine_directives(policy)),
                         ("waf CRS setup", crs_setup(policy))]
    parts += [(f"CRS file {f}", f"Include {f}") for f in files
              if f.name < _FIRST_AFTER_USER_RULES]
    if not crs_has_log4shell_rules(directory):
        parts.append(("waf Log4Shell rules", log4shell.RULES))
    parts += [(f"waf.rules[{i}]", text) for i, text in enumerate(policy.rules)]
    parts += [(f"CRS file {f}", f"Include {f}") for f in files
              if f.name >= _FIRST_AFTER_USER_RULES]
    if policy.rule_exclusions:
        parts.append(("waf.ruleExclusions",
                      "SecRuleRemoveById " + " ".join(map(str, policy.rule_exclusions))))
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class WafRules:
    """A compiled rule set and the rule ids it defines (see ``report.known_ids``)."""

    rule_set: RuleSet
    known_ids: frozenset[str]


def compile_rules(parts: tuple[Part, ...]) -> WafRules:
    """The compiled rule set. Raises ``LibraryMissing`` (the message says what to install)
    or ``ValueError`` naming the part ModSecurity refused."""
    try:
        rule_set = engine().rule_set(parts)
    except RulesError as exc:
        raise ValueError(str(exc)) from None
    texts = [text for label, text in parts if not label.startswith("CRS file ")]
    return WafRules(rule_set, crs_rule_ids() | known_ids(texts))


@functools.cache
def crs_rule_ids(directory: Path = CRS_RULES) -> frozenset[str]:
    return known_ids([f.read_text(errors="replace") for f in crs_files(directory)])
