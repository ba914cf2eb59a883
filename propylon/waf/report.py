"""What the rules said about a request, read from ModSecurity's text log lines.

A line ends with bracketed fields (``[file ".."] [line "81"] [id "942100"] [rev ""] [msg ".."]
[data ".."] [severity "2"] ..``); only ``id``, ``msg``, ``data`` and ``severity`` are kept.
The line also quotes the request (the matched value, the URI), so a client can write text
that looks like these fields: a rule id is believed only when it is one the rule set defines
(``known_ids``), which keeps metric labels bounded by the configuration whatever requests
say. Matched data is truncated to ``MAX_DATA`` characters: it is attacker-controlled, and a
log line must stay a line. The file paths, rule text and tags ModSecurity puts in the line
are not kept, and nothing of any of it ever reaches a client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DATA = 200
MAX_MESSAGE = 200
_FIELDS = re.compile(
    r'\[line "\d+"\] \[id "(\d*)"\] \[rev "[^"]*"\] \[msg "(.*?)"\] \[data "(.*?)"\] '
    r'\[severity "(\d*)"\]')
_RULE_ID = re.compile(r"""\bid\s*:\s*'?(\d+)""")
_SEVERITIES = ("emergency", "alert", "critical", "error", "warning", "notice", "info", "debug")


@dataclass(frozen=True, slots=True)
class RuleMatch:
    rule_id: str  # "" for a rule without an id
    message: str
    data: str  # the matched data, truncated
    severity: str  # "critical", "warning", ... ("" when the rule has none)

    def to_json(self) -> dict[str, str]:
        doc = {"id": self.rule_id, "msg": self.message}
        if self.data:
            doc["data"] = self.data
        if self.severity:
            doc["severity"] = self.severity
        return doc


def _truncated(text: str, limit: int) -> str:
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def known_ids(texts: list[str]) -> frozenset[str]:
    """The rule ids that rule texts (files' contents, policy rules) define."""
    return frozenset(i for text in texts for i in _RULE_ID.findall(text))


def rule_match(line: str, known: frozenset[str]) -> RuleMatch:
    """The first field group of ``line`` whose rule id is ``known`` (id "" otherwise)."""
    groups = _FIELDS.findall(line)
    rule_id, msg, data, severity = next(
        (g for g in groups if g[0] in known), ("", "", "", ""))
    if severity.isdigit() and int(severity) < len(_SEVERITIES):
        severity = _SEVERITIES[int(severity)]
    return RuleMatch(
        rule_id=rule_id,
        message=_truncated(msg, MAX_MESSAGE),
        data=_truncated(data, MAX_DATA),
        severity=severity,
    )


@dataclass(frozen=True, slots=True)
class Finding:
    """An intervention: the status ModSecurity asked for and the rules behind it, in the
    order they matched (the deciding rule, e.g. CRS 949110, last)."""

    phase: str  # "request" or "response"
    status: int
    rules: tuple[RuleMatch, ...]

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.rule_id or "none" for m in self.rules))


def finding(phase: str, status: int, lines: list[str], deciding: str,
            known: frozenset[str]) -> Finding:
    """The finding from the transaction's log lines and the intervention's own line (which
    the log callback may also have seen)."""
    matches = [rule_match(line, known) for line in lines]
    last = rule_match(deciding, known) if deciding else None
    if last is not None and last.rule_id and all(m.rule_id != last.rule_id for m in matches):
        matches.append(last)
    return Finding(phase, status, tuple(matches))
