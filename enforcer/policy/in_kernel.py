"""Which policies may kill from the kernel (`kill: {in_kernel: true}`).

The kernel sees no process table, so a rule is eligible only if, once the process's own
fields (proc.*, user.*, container.*, k8s.*) are known at exec, what is left of its
condition (the residue) is a check the BPF program can make exactly: paths and prefixes,
flags, ports. The residue comes from the rules engine's partial evaluation; until that is
wired in, every in_kernel request is refused with that reason — never a false kill — and
the userspace kill still applies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from enforcer.errors import Diagnostic
from enforcer.policy.model import PolicySet

#: residue(rule) -> None when the kernel can check the rule exactly, else the reason not
ResidueCheck = Callable[[Any], str | None]

NO_PARTIAL_EVALUATION = ("the rules engine's partial evaluation is not available yet, so the "
                         "kernel cannot be shown to check this rule exactly; use the "
                         "userspace kill (in_kernel: false)")


def check_in_kernel(policies: PolicySet, ruleset: Any = None,
                    residue: ResidueCheck | None = None) -> list[Diagnostic]:
    """Diagnostics for every in_kernel kill that cannot be honoured exactly."""
    problems = []
    for policy in policies.policies:
        for step in policy.actions:
            if step.name != "kill" or not getattr(step.action.params, "in_kernel", False):
                continue
            for rule_name in policy.match.rules:
                rule = None
                if ruleset is not None:
                    rule = ruleset.rules.get(rule_name)
                    if rule is None:
                        problems.append(Diagnostic(
                            policy.file, step.line, step.column,
                            f"policy {policy.name!r}: in_kernel kill names rule {rule_name!r}, "
                            "which is not loaded"))
                        continue
                reason = residue(rule) if residue is not None and rule is not None \
                    else NO_PARTIAL_EVALUATION
                if reason:
                    problems.append(Diagnostic(
                        policy.file, step.line, step.column,
                        f"policy {policy.name!r}: rule {rule_name!r} cannot be enforced in "
                        f"the kernel: {reason}"))
    return problems
