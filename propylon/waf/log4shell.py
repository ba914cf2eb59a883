"""Log4Shell (CVE-2021-44228) rules shipped with Propylon, for CRS releases without them.

The OWASP CRS added rules 944150, 944151 and 944152 for Log4j lookups after 3.3.2; Debian's
``modsecurity-crs`` 3.3.4 does not carry them. These are Propylon's own rules with the same ids
and the same paranoia levels, scored like the CRS's Java rules, so ``ruleExclusions`` and the
anomaly threshold treat them as CRS rules. They are loaded only when the installed CRS lacks
rule 944150 (``rules.py``), right after the CRS's Java rules and before its blocking
evaluation.

What they look for, after URL, JavaScript and HTML-entity decoding: a lookup opening ``${``
(also written ``&dollar;``, ``&lbrace;`` or ``&lcub;``), then
- 944150 (paranoia 1): ``jndi`` or ``ctx`` right inside it, or another lookup opening within
  15 characters (nesting is how ``${${lower:j}ndi:...}`` and ``${${::-j}${::-n}di:...}`` hide
  the word);
- 944151 (paranoia 2): the same nesting at any distance;
- 944152 (paranoia 4): any lookup opening in a request header.
in the request line, arguments and their names (query, form and JSON bodies), cookies and
their names, request headers, and XML bodies.
"""

from __future__ import annotations

_OPEN = r"(?:\$|&dollar;?)(?:\{|&lbrace;?|&lcub;?)"
_TARGETS = ("REQUEST_LINE|ARGS|ARGS_NAMES|REQUEST_COOKIES|REQUEST_COOKIES_NAMES|"
            "REQUEST_HEADERS|XML:/*|XML://@*")
_DECODE = "t:none,t:urlDecodeUni,t:jsDecode,t:htmlEntityDecode"

RULE_IDS = (944150, 944151, 944152)


def _rule(rule_id: int, level: int, targets: str, pattern: str, msg: str) -> str:
    # The paranoia check comes first so that MATCHED_VAR in logdata is the request's.
    return f"""
SecRule TX:EXECUTING_PARANOIA_LEVEL "@ge {level}" \\
    "id:{rule_id},phase:2,block,t:none,log,\\
    msg:'{msg}',\\
    logdata:'Matched Data: %{{TX.0}} found within %{{MATCHED_VAR_NAME}}: %{{MATCHED_VAR}}',\\
    tag:'application-multi',tag:'language-java',tag:'platform-multi',tag:'attack-rce',\\
    tag:'paranoia-level/{level}',tag:'propylon/log4shell',\\
    severity:'CRITICAL',chain"
    SecRule {targets} "@rx (?i){pattern}" \\
        "{_DECODE},capture,\\
        setvar:'tx.rce_score=+%{{tx.critical_anomaly_score}}',\\
        setvar:'tx.anomaly_score_pl{level}=+%{{tx.critical_anomaly_score}}'"
"""


RULES = "".join((
    _rule(944150, 1, _TARGETS, rf"{_OPEN}(?:[^}}]{{0,15}}{_OPEN}|\s*(?:jndi|ctx)\b)",
          "Potential Remote Command Execution: Log4j / Log4Shell"),
    _rule(944151, 2, _TARGETS, rf"{_OPEN}[^}}]*{_OPEN}",
          "Potential Remote Command Execution: Log4j nested lookup"),
    _rule(944152, 4, "REQUEST_HEADERS", _OPEN,
          "Potential Remote Command Execution: Log4j lookup in a request header"),
))
