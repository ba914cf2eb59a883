"""Settings of the ``waf`` policy: ModSecurity v3 with the OWASP Core Rule Set (DESIGN §6;
behaviour in docs/policies.md, fields in docs/reference.md).

Only the shape is checked here: whether the extra ``rules`` compile, and whether
libmodsecurity is installed at all, is checked where the rules are compiled
(``propylon/waf/rules.py``), which ``propylon validate`` and ``run`` do for every policy."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from propylon.policies.body import Size
from propylon.schema import Model, invalid

MAX_REQUEST_BODY_LIMIT = 128 << 20


def _check_rule_text(value: str) -> str:
    if not value.strip():
        raise invalid("waf_rule", "a waf rule cannot be empty")
    if "\0" in value:
        raise invalid("waf_rule", "a waf rule cannot contain NUL characters")
    return value


RuleText = Annotated[str, AfterValidator(_check_rule_text)]
RuleId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class WafPolicy(Model):
    # block: a request the rules reject is answered 403; detect: it is only logged
    mode: Literal["block", "detect"] = "block"
    paranoia_level: int = Field(default=1, ge=1, le=4)
    # the CRS inbound anomaly score at which a request is rejected (critical rule = 5)
    anomaly_threshold: int = Field(default=5, ge=1, le=10_000)
    rule_exclusions: list[RuleId] = Field(default_factory=list)  # SecRuleRemoveById
    rules: list[RuleText] = Field(default_factory=list)  # extra SecRule/SecAction directives
    # request bodies are inspected whole, up to this size; a larger one is answered 413
    request_body_limit: Size = Field(default=1 << 20, ge=1, le=MAX_REQUEST_BODY_LIMIT)
