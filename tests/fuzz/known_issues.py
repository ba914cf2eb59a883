"""Gateway bugs the HTTP/1.1 fuzz target found, reported and not fixed yet.

A fuzz run that stopped at the first input showing one of them would find nothing else, so
unless ``PROPYLON_FUZZ_KNOWN=fail`` the harness recognises each one and counts it instead:
either where it starts (``pattern`` None: the harness steps around it, as a fixed gateway
would behave, and the rest of the input is still checked) or by the problems it causes
(``pattern``, plus ``also``: problems that follow from it in the same input). An input with
any other problem fails. The fuzz test prints the counts; each issue has a reproducer in
``crashes/http11/`` listed in ``test_fuzz.OPEN``. When a fix lands, the reproducer passes, the
strict xfail fails, and the entry here goes with the one there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownIssue:
    description: str
    pattern: str | None = None  # a problem it causes (None: recognised where it starts)
    also: str | None = None  # problems that follow from it


KNOWN_ISSUES: dict[str, KnownIssue] = {}  # none open: the seven found were fixed


def attribute(problems: list[str]) -> tuple[set[str], list[str]]:
    """The known issues ``problems`` show, and the problems none of them explains."""
    known = {name for name, issue in KNOWN_ISSUES.items()
             if issue.pattern and any(re.search(issue.pattern, p) for p in problems)}
    unknown = [p for p in problems if not any(_explains(KNOWN_ISSUES[n], p) for n in known)]
    return known, unknown


def _explains(issue: KnownIssue, problem: str) -> bool:
    return any(pattern and re.search(pattern, problem) for pattern in (issue.pattern, issue.also))
