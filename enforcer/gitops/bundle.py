"""A complete, consistent decision set: rules compiled into an Engine, the response
policies, and the digest naming them — loaded all at once, or not at all.

This is what `enforcer validate` checks, what `enforcer test` runs, and what the hot
reloader swaps in (enforcer.reload)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enforcer.errors import Diagnostic, EnforcerError, RuleError
from enforcer.gitops.crosscheck import crosscheck
from enforcer.gitops.digest import digest_files, short
from enforcer.policy.loader import policy_files, validate_policy_files
from enforcer.policy.model import PolicySet
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules, rule_files


class BundleError(EnforcerError):
    """The set did not load; `diagnostics` lists every problem (errors first, located)."""

    def __init__(self, diagnostics: list[Diagnostic], transient: bool = False):
        self.diagnostics = list(diagnostics)
        self.transient = transient  # the files changed while being read: try again
        super().__init__("\n".join(str(d) for d in self.diagnostics) or "invalid set")

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity != "warning"]


@dataclass(frozen=True)
class Bundle:
    """Rules, engine (None when not built), policies and digest of one loaded set."""

    ruleset: Any
    policies: PolicySet
    digest: str
    files: tuple[str, ...]
    warnings: tuple[Diagnostic, ...] = ()
    engine: Any = field(default=None, compare=False)

    @property
    def short_digest(self) -> str:
        return short(self.digest)


def source_files(rule_paths: Sequence[str | Path],
                 policy_paths: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(kind, file) in load order: exactly the files the loaders read."""
    return ([("rules", p) for p in rule_files(rule_paths)]
            + [("policies", p) for p in policy_files(policy_paths)])


@dataclass
class Checked:
    """Everything found while loading a set, whether or not it loaded."""

    ruleset: Any
    policies: PolicySet
    diagnostics: list[Diagnostic]
    digest: str
    files: list[tuple[str, Path]]
    changed: bool = False  # the files changed while being read

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity != "warning"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]


def check_bundle(rule_paths: Sequence[str | Path], policy_paths: Sequence[str | Path], *,
                 enabled_actions: set[str] | None = None) -> Checked:
    """Load rules and policies together and cross-check them; never raises for bad input.
    The rules' diagnostics come first, then the policies', then the cross-checks'."""
    files = source_files(rule_paths, policy_paths)
    try:
        before = digest_files(files)
    except OSError as exc:
        name = getattr(exc, "filename", None) or "?"
        return Checked(None, PolicySet(), [Diagnostic(str(name), 1, 1,
                                                      f"cannot read: {exc.strerror}")],
                       "", files, changed=True)
    diagnostics: list[Diagnostic] = []
    ruleset = None
    try:
        ruleset = load_rules(list(rule_paths))
        diagnostics += ruleset.warnings
    except RuleError as exc:
        diagnostics += exc.diagnostics
    policies, policy_diags = validate_policy_files(list(policy_paths))
    diagnostics += policy_diags
    if ruleset is not None and not _errors(policy_diags):
        diagnostics += crosscheck(ruleset, policies, enabled_actions)
    try:
        changed = digest_files(files) != before
    except OSError:
        changed = True
    return Checked(ruleset, policies, diagnostics, before, files, changed)


def load_bundle(rule_paths: Sequence[str | Path], policy_paths: Sequence[str | Path], *,
                enabled_actions: set[str] | None = None, engine: bool = True,
                hostname: str | None = None,
                build_engine: Callable[[Any], Any] | None = None) -> Bundle:
    """Load rules and policies together and cross-check them. Raises BundleError with every
    diagnostic (errors first) when anything is wrong, `transient` when the files changed
    while being read. `build_engine(ruleset)` makes the engine when the caller selects rules
    or sets engine options (the agent's --min-priority, --disable-rule, …)."""
    checked = check_bundle(rule_paths, policy_paths, enabled_actions=enabled_actions)
    if checked.changed:
        raise BundleError(checked.errors + checked.warnings, transient=True)
    if checked.ruleset is None or checked.errors:
        raise BundleError(checked.errors + checked.warnings)
    built = None
    if engine:
        built = (build_engine(checked.ruleset) if build_engine is not None
                 else Engine(checked.ruleset, hostname=hostname))
    return Bundle(ruleset=checked.ruleset, policies=checked.policies, digest=checked.digest,
                  files=tuple(str(p) for _, p in checked.files),
                  warnings=tuple(checked.warnings), engine=built)


def _errors(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity != "warning"]
