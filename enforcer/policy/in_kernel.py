"""Which policies may kill from the kernel (`kill: {in_kernel: true}`).

The kernel sees no process table, so a rule is eligible only if, once the process's own
fields (proc.*, user.*, container.*, k8s.*) are known at exec, what is left of its
condition (the residue) is a check the BPF program can make exactly: syscalls, open flags,
the syscall's result, absolute paths and prefixes, a connect's (sendto's, sendmsg's) remote
port, address and family. The rules engine's partial evaluation
(enforcer.kernel.residue) decides it; a refused rule can still use the userspace kill."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from enforcer.errors import Diagnostic
from enforcer.kernel.residue import rule_eligibility
from enforcer.policy.model import PolicySet

#: residue(rule) -> None when the kernel can check the rule exactly, else the reason not
ResidueCheck = Callable[[Any], str | None]

NO_RULES = ("the rules were not given, so the kernel cannot be shown to check this rule "
            "exactly; validate the policies together with the rules")


def _in_kernel_steps(policies: PolicySet):
    for policy in policies.policies:
        for step in policy.actions:
            if step.name == "kill" and getattr(step.action.params, "in_kernel", False):
                yield policy, step


def check_in_kernel(policies: PolicySet, ruleset: Any = None,
                    residue: ResidueCheck | None = None) -> list[Diagnostic]:
    """Diagnostics for every in_kernel kill that cannot be honoured exactly."""
    residue = residue or rule_eligibility
    problems = []
    for policy, step in _in_kernel_steps(policies):
        for rule_name in policy.match.rules:
            if ruleset is None:
                reason = NO_RULES
            else:
                rule = ruleset.rules.get(rule_name)
                if rule is None:
                    problems.append(Diagnostic(
                        policy.file, step.line, step.column,
                        f"policy {policy.name!r}: in_kernel kill names rule {rule_name!r}, "
                        "which is not loaded"))
                    continue
                reason = residue(rule)
            if reason:
                problems.append(Diagnostic(
                    policy.file, step.line, step.column,
                    f"policy {policy.name!r}: rule {rule_name!r} cannot be enforced in "
                    f"the kernel: {reason}"))
    return problems


def _final_before(policies: PolicySet, policy: Any, rule: str) -> Any:
    """The first enabled final policy before `policy` that may match alerts of `rule`."""
    for earlier in policies.policies:
        if earlier is policy:
            return None
        if earlier.final and earlier.enabled and (not earlier.match.rules
                                                  or earlier.match.names_rule(rule)):
            return earlier
    return None


def in_kernel_rules(policies: PolicySet, ruleset: Any, dry_run: bool
                    ) -> tuple[list[Any], list[str]]:
    """(rules the kernel kills for, warnings). Nothing in dry-run, nothing for a dry-run
    policy, nothing for a disabled or ineligible rule (each said in a warning)."""
    if dry_run:
        return [], []
    chosen: dict[str, Any] = {}
    warnings = []
    for policy, _step in _in_kernel_steps(policies):
        if policy.dry_run or not policy.enabled:
            continue
        for name in policy.match.rules:
            stopper = _final_before(policies, policy, name)
            if stopper is not None:
                # the kernel kills before any policy is chosen: it cannot honour the stop
                warnings.append(f"policy {policy.name!r}: an earlier final policy "
                                f"{stopper.name!r} may answer rule {name!r} first; no "
                                "in-kernel kill for it (the userspace kill still applies "
                                "when that policy does not match)")
                continue
            rule = ruleset.rules.get(name)
            if rule is None or not getattr(rule, "enabled", True):
                warnings.append(f"policy {policy.name!r}: rule {name!r} is not loaded or not "
                                "enabled; no in-kernel kill for it")
                continue
            reason = rule_eligibility(rule)
            if reason:
                warnings.append(f"policy {policy.name!r}: rule {name!r} cannot be enforced "
                                f"in the kernel ({reason}); the userspace kill still applies")
                continue
            chosen.setdefault(name, rule)
    return list(chosen.values()), warnings
