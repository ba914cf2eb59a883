"""What a proxy applies to a rule: its own policies, and its Gateway's default policies of
the types it has none of (``ir.effective_policies``, in this process's order of types)."""

from __future__ import annotations

from propylon import ir
from propylon.policies.plugins import policy_types


def applied(gateway: ir.GatewayIR, rule: ir.RuleIR) -> tuple[ir.PolicyIR, ...]:
    return ir.effective_policies(gateway.default_policies, rule.policies, policy_types().rank)
