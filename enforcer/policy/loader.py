"""Loading response policy files: every problem is reported as FILE:LINE:COL: message.

A policy file is a YAML list; each item is a policy:

    - policy: kill-shadow-readers
      match: {rules: [Read sensitive file untrusted], priority: ">=warning"}
      actions:
        - snapshot: {max_bytes: 10Mi}
        - kill: {signal: KILL}
      dry_run: false
      rate_limit: {max: 5, per: 1m, burst: 2}
      cooldown: 5m
      on_failure: continue
      breaker: {workloads: 5, window: 10m, cooloff: 10m}   # blast radius (defaults: global)
      escalate: {after: 5, within: 1m, actions: [quarantine]}
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from actions import registry
from actions.base import ParamError
from enforcer.errors import Diagnostic, PolicyError
from enforcer.policy.field_match import parse_fields
from enforcer.policy.located import Located, load_located, yaml_problem
from enforcer.policy.model import (
    ActionStep,
    BreakerOverride,
    Escalation,
    Match,
    Policy,
    PolicySet,
    PriorityFilter,
    RateLimit,
)
from enforcer.units import parse_duration

POLICY_KEYS = ("policy", "desc", "enabled", "match", "actions", "dry_run", "rate_limit",
               "cooldown", "on_failure", "override", "breaker", "escalate", "final")
BREAKER_KEYS = ("workloads", "window", "cooloff")
ESCALATE_KEYS = ("after", "within", "actions")
MATCH_KEYS = ("rules", "tags", "priority", "fields", "source")
RATE_KEYS = ("max", "per", "burst")
ON_FAILURE = ("continue", "stop")


def policy_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, plus *.yaml/*.yml in directories named (sorted), in argument order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir()
                                if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            found.append(path)
    return found


def load_policies(paths: Iterable[str | Path]) -> PolicySet:
    """Load and validate policy files. Raises PolicyError listing every problem found."""
    policy_set, errors = _load(paths)
    if errors:
        raise PolicyError(errors)
    return policy_set


def validate_policy_files(paths: Iterable[str | Path]) -> tuple[PolicySet, list[Diagnostic]]:
    """For `enforcer validate`: the policies that loaded and every diagnostic (errors and
    warnings), without raising."""
    policy_set, errors = _load(paths)
    return policy_set, errors + policy_set.warnings


def _load(paths: Iterable[str | Path]) -> tuple[PolicySet, list[Diagnostic]]:
    result = PolicySet()
    errors: list[Diagnostic] = []
    by_name: dict[str, int] = {}
    for path in policy_files(paths):
        name = str(path)
        result.files.append(name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            errors.append(Diagnostic(name, 1, 1, f"cannot read policy file: {exc.strerror}"))
            continue
        try:
            doc = load_located(text)
        except yaml.YAMLError as exc:
            line, col, problem = yaml_problem(exc)
            errors.append(Diagnostic(name, line, col, f"invalid YAML: {problem}"))
            continue
        reader = _FileReader(name, doc, errors, result.warnings)
        for policy, override in reader.policies():
            if policy.name in by_name:
                if not override:
                    first = result.policies[by_name[policy.name]]
                    errors.append(Diagnostic(name, policy.line, 1,
                                             f"policy {policy.name!r} is already defined at "
                                             f"{first.file}:{first.line}; rename it or add "
                                             "'override: true' to replace it"))
                    continue
                result.policies[by_name[policy.name]] = policy
            else:
                by_name[policy.name] = len(result.policies)
                result.policies.append(policy)
    return result, errors


class _FileReader:
    def __init__(self, name: str, doc: Located, errors: list[Diagnostic],
                 warnings: list[Diagnostic]):
        self.name = name
        self.doc = doc
        self.errors = errors
        self.warnings = warnings
        self.failed = False

    def error(self, path: tuple[Any, ...], message: str, key: bool = False) -> None:
        line, col = self.doc.where(path, key=key)
        self.errors.append(Diagnostic(self.name, line, col, message))
        self.failed = True

    def policies(self) -> Iterable[tuple[Policy, bool]]:
        data = self.doc.data
        if data is None:
            self.warnings.append(Diagnostic(self.name, 1, 1, "empty policy file",
                                            severity="warning"))
            return
        if not isinstance(data, list):
            self.error((), "a policy file must be a YAML list of '- policy: NAME' items")
            return
        for index, item in enumerate(data):
            self.failed = False
            policy = self.policy((index,), item)
            if policy is not None and not self.failed:
                yield policy, bool(isinstance(item, dict) and item.get("override") is True)

    def policy(self, path: tuple[Any, ...], item: Any) -> Policy | None:
        if not isinstance(item, dict) or "policy" not in item:
            self.error(path, "each item must be a mapping starting with 'policy: NAME'")
            return None
        for key in item:
            if key not in POLICY_KEYS:
                self.unknown(path + (key,), key, POLICY_KEYS, "policy key")
        name = item["policy"]
        if not isinstance(name, str) or not name.strip():
            self.error(path + ("policy",), "'policy' must be a non-empty name")
            name = "?"
        match = self.match(path + ("match",), item.get("match"))
        steps = self.actions(path + ("actions",), item.get("actions"))
        dry_run = self.boolean(path, item, "dry_run", True)
        enabled = self.boolean(path, item, "enabled", True)
        final = self.boolean(path, item, "final", False)
        self.boolean(path, item, "override", False)
        rate = self.rate_limit(path + ("rate_limit",), item.get("rate_limit"))
        cooldown = None
        if item.get("cooldown") is not None:
            try:
                cooldown = parse_duration(item["cooldown"])
            except ValueError as exc:
                self.error(path + ("cooldown",), f"cooldown: {exc}")
        on_failure = item.get("on_failure", "continue")
        if on_failure not in ON_FAILURE:
            self.error(path + ("on_failure",),
                       f"on_failure must be one of {', '.join(ON_FAILURE)}; got {on_failure!r}")
        desc = item.get("desc", "")
        if not isinstance(desc, str):
            self.error(path + ("desc",), "desc must be a string")
        breaker = self.breaker(path + ("breaker",), item.get("breaker"))
        escalate = self.escalate(path + ("escalate",), item.get("escalate"))
        if match is None or steps is None:
            return None
        self.check_in_kernel(path, match, steps)
        line, _ = self.doc.where(path)
        return Policy(name=name, match=match, actions=tuple(steps), dry_run=dry_run,
                      rate_limit=rate, cooldown=cooldown, on_failure=on_failure,
                      enabled=enabled, desc=desc if isinstance(desc, str) else "",
                      file=self.name, line=line, breaker=breaker, escalate=escalate,
                      final=final)

    def breaker(self, path: tuple[Any, ...], raw: Any) -> BreakerOverride | None:
        """`breaker: {workloads: N, window: DURATION, cooloff: DURATION}`, each optional."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.error(path, "breaker must be a mapping {workloads: N, window: DURATION, "
                             "cooloff: DURATION}")
            return None
        for key in raw:
            if key not in BREAKER_KEYS:
                self.unknown(path + (key,), key, BREAKER_KEYS, "breaker key")
        workloads = raw.get("workloads")
        if workloads is not None and (isinstance(workloads, bool)
                                      or not isinstance(workloads, int) or workloads < 1):
            self.error(path + ("workloads",), "breaker.workloads must be a positive integer "
                                              "(distinct workloads per window)")
            workloads = None
        durations: dict[str, float | None] = {}
        for key in ("window", "cooloff"):
            durations[key] = None
            if raw.get(key) is not None:
                try:
                    durations[key] = parse_duration(raw[key])
                except ValueError as exc:
                    self.error(path + (key,), f"breaker.{key}: {exc}")
        return BreakerOverride(workloads, durations["window"], durations["cooloff"])

    def escalate(self, path: tuple[Any, ...], raw: Any) -> Escalation | None:
        """`escalate: {after: N, within: DURATION, actions: [...]}`."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.error(path, "escalate must be a mapping {after: N, within: DURATION, "
                             "actions: [...]}")
            return None
        for key in raw:
            if key not in ESCALATE_KEYS:
                self.unknown(path + (key,), key, ESCALATE_KEYS, "escalate key")
        after = raw.get("after")
        if isinstance(after, bool) or not isinstance(after, int) or after < 2:
            self.error(path + ("after",) if "after" in raw else path,
                       "escalate.after must be an integer of at least 2 (the repeat that "
                       "escalates)")
            return None
        try:
            within = parse_duration(raw.get("within", "1m"))
        except ValueError as exc:
            self.error(path + ("within",), f"escalate.within: {exc}")
            return None
        steps = self.actions(path + ("actions",), raw.get("actions"))
        if steps is None:
            return None
        for index, step in enumerate(steps):
            if step.name == "kill" and getattr(step.action.params, "in_kernel", False):
                self.error(path + ("actions", index, "kill", "in_kernel"),
                           "escalate: an in_kernel kill cannot be an escalation (the kernel "
                           "kills at the first match); put it in the policy's actions")
        return Escalation(after, within, tuple(steps))

    def unknown(self, path: tuple[Any, ...], key: Any, allowed: tuple[str, ...],
                what: str) -> None:
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.error(path, f"unknown {what} {key!r}{hint} (allowed: {', '.join(allowed)})",
                   key=True)

    def boolean(self, path: tuple[Any, ...], item: dict[str, Any], key: str,
                default: bool) -> bool:
        value = item.get(key, default)
        if not isinstance(value, bool):
            self.error(path + (key,), f"{key} must be true or false, got {value!r}")
            return default
        return value

    def strings(self, path: tuple[Any, ...], value: Any, what: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(path, f"{what} must be a list of strings")
            return ()
        return tuple(value)

    def match(self, path: tuple[Any, ...], raw: Any) -> Match | None:
        if raw is None:
            self.error(path[:-1], "missing 'match': say which alerts this policy answers "
                                  "(rules, tags, priority, fields or source)")
            return None
        if not isinstance(raw, dict) or not raw:
            self.error(path, "match must be a non-empty mapping of rules, tags, priority, "
                             "fields, source")
            return None
        for key in raw:
            if key not in MATCH_KEYS:
                self.unknown(path + (key,), key, MATCH_KEYS, "match key")
        rules = self.strings(path + ("rules",), raw["rules"], "rules") if "rules" in raw else ()
        tags = self.strings(path + ("tags",), raw["tags"], "tags") if "tags" in raw else ()
        priority = None
        if "priority" in raw:
            try:
                priority = PriorityFilter.parse(raw["priority"])
            except ValueError as exc:
                self.error(path + ("priority",), f"priority: {exc} (optionally after >=, >, "
                                                 "<=, < or ==)")
        fields = (parse_fields(path + ("fields",), raw["fields"], self.error)
                  if "fields" in raw else ())
        source = raw.get("source")
        if source is not None and not isinstance(source, str):
            self.error(path + ("source",), "source must be a string such as syscall")
            source = None
        return Match(rules=rules, tags=tags, priority=priority, fields=fields,
                     source=source)

    def actions(self, path: tuple[Any, ...], raw: Any) -> list[ActionStep] | None:
        if raw is None:
            self.error(path[:-1], "missing 'actions': list what to do, e.g. "
                                  "[{kill: {}}] or [{notify: {url: ...}}]")
            return None
        if not isinstance(raw, list) or not raw:
            self.error(path, "actions must be a non-empty list of '- ACTION: {params}'")
            return None
        steps: list[ActionStep] = []
        known = registry.names()
        for index, item in enumerate(raw):
            here = path + (index,)
            if isinstance(item, str):
                item = {item: {}}
            if not isinstance(item, dict) or len(item) != 1:
                self.error(here, "each action is a one-key mapping '- ACTION: {params}'")
                continue
            (name, params), = item.items()
            if name not in known:
                self.unknown(here + (name,), name, tuple(known), "action")
                continue
            action_type = registry.get(name)
            try:
                parsed = action_type.params_type.from_mapping(params)
            except ParamError as exc:
                key = exc.key if isinstance(exc.key, tuple) else \
                    ((exc.key,) if exc.key is not None else ())
                where = here + (name, *key)
                self.error(where, f"{name}: {exc}", key=exc.unknown_key)
                continue
            line, col = self.doc.where(here + (name,), key=True)
            steps.append(ActionStep(name=name, action=action_type(parsed), line=line,
                                    column=col))
        return steps

    def rate_limit(self, path: tuple[Any, ...], raw: Any) -> RateLimit | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.error(path, "rate_limit must be a mapping {max: N, per: DURATION, burst: N}")
            return None
        for key in raw:
            if key not in RATE_KEYS:
                self.unknown(path + (key,), key, RATE_KEYS, "rate_limit key")
        top = raw.get("max")
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            self.error(path + ("max",), "rate_limit.max must be a positive integer")
            return None
        try:
            per = parse_duration(raw.get("per", "1m"))
        except ValueError as exc:
            self.error(path + ("per",), f"rate_limit.per: {exc}")
            return None
        burst = raw.get("burst", top)
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            self.error(path + ("burst",), "rate_limit.burst must be a positive integer")
            return None
        return RateLimit(max=top, per=per, burst=burst)

    def check_in_kernel(self, path: tuple[Any, ...], match: Match,
                        steps: list[ActionStep]) -> None:
        """Structural limits of the in-kernel kill (the rule residue is checked against the
        rules by enforcer.policy.in_kernel.check_in_kernel)."""
        for index, step in enumerate(steps):
            if step.name != "kill" or not getattr(step.action.params, "in_kernel", False):
                continue
            where = path + ("actions", index, "kill", "in_kernel")
            if not match.rules or any(c in r for r in match.rules for c in "*?["):
                self.error(where, "in_kernel: the policy must name its rules exactly (no "
                                  "globs), so that each rule's residue can be checked")
            if match.fields:
                self.error(where, "in_kernel: the kernel checks only the rule's residue; "
                                  "move the fields conditions into the rule's condition")
            if any(s.name == "snapshot" and getattr(s.action.params, "paths", ())
                   for s in steps):
                # the kernel kills at the syscall, before the responder hears of the match
                line, col = self.doc.where(where)
                self.warnings.append(Diagnostic(
                    self.name, line, col,
                    "in_kernel: the kernel kills the process at the syscall, before any "
                    "snapshot runs, so paths under /proc/PID/root are gone by then; only "
                    "a container's upper directory can still be taken (or use the "
                    "userspace kill, after the snapshot)", severity="warning"))
