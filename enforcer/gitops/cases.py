"""Policy test case files (`tests/*.yaml` of a policy repository), read with the position
of every item so that a failing case is reported at FILE:LINE.

    cases:
      - name: kubectl exec into a production pod is contained
        events:                        # flat objects keyed by Falco field names, as
          - {evt.type: execve, ...}    # `enforcer replay` reads them; or a path to a
                                       # .jsonl file, relative to this file
        expect:
          rules: [Terminal shell in container]     # the alerts' rules, in order
          actions:                                 # every planned step, in order
            - {policy: contain-shell, action: networkpolicy}
            - {policy: contain-shell, action: delete_pod, target: {namespace: payments},
               params: {grace_period: 0}}
            - {policy: contain-shell, action: kill, outcome: skipped}
            - {policy: contain-shell, outcome: rate-limited}
      - name: the debug image may open shells
        events: [...]
        expect: silence                # no alert, nothing planned

`rules` and `actions` are each checked only when given; `actions: []` means alerts but no
response. An expected action's `outcome` defaults to `planned` (it would be carried out);
`target` and `params` compare only the keys they name."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from enforcer.errors import Diagnostic
from enforcer.policy.located import Located, load_located, yaml_problem

CASE_KEYS = ("name", "desc", "events", "expect")
EXPECT_KEYS = ("rules", "actions")
STEP_KEYS = ("policy", "action", "outcome", "target", "params")
#: outcomes an expected step may name (`planned` is the audit's dry-run: it would be done)
OUTCOMES = ("planned", "skipped", "suppressed", "cooldown", "noop", "failed", "rate-limited")


@dataclass(frozen=True)
class ExpectedStep:
    policy: str
    action: str | None
    outcome: str = "planned"
    target: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    line: int = 0
    column: int = 0


@dataclass
class Case:
    name: str
    file: str
    line: int
    events: list[dict[str, Any]]
    silence: bool = False
    rules: list[str] | None = None
    steps: list[ExpectedStep] | None = None
    rules_at: list[tuple[int, int]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def load_cases(path: str | Path) -> tuple[list[Case], list[Diagnostic]]:
    """The cases of one file, and every problem found in it (a broken case is left out)."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
        doc = load_located(text)
    except OSError as exc:
        return [], [Diagnostic(name, 1, 1, f"cannot read test file: {exc.strerror}")]
    except yaml.YAMLError as exc:
        line, col, problem = yaml_problem(exc)
        return [], [Diagnostic(name, line, col, f"invalid YAML: {problem}")]
    return _Reader(name, Path(path), doc).cases()


class _Reader:
    def __init__(self, name: str, path: Path, doc: Located):
        self.name = name
        self.path = path
        self.doc = doc
        self.problems: list[Diagnostic] = []
        self.failed = False

    def error(self, where: tuple[Any, ...], message: str, key: bool = False) -> None:
        line, col = self.doc.where(where, key=key)
        self.problems.append(Diagnostic(self.name, line, col, message))
        self.failed = True

    def cases(self) -> tuple[list[Case], list[Diagnostic]]:
        data = self.doc.data
        root: tuple[Any, ...] = ()
        if isinstance(data, dict) and "cases" in data:
            for key in data:
                if key != "cases":
                    self.error((key,), f"unknown key {key!r}; a test file holds 'cases:'",
                               key=True)
            data, root = data["cases"], ("cases",)
        if not isinstance(data, list) or not data:
            self.error(root, "a test file is 'cases:' followed by a non-empty list of "
                             "'- name: ..., events: ..., expect: ...'")
            return [], self.problems
        found = []
        for index, item in enumerate(data):
            self.failed = False
            case = self.case(root + (index,), item)
            if case is not None and not self.failed:
                found.append(case)
        return found, self.problems

    def case(self, where: tuple[Any, ...], item: Any) -> Case | None:
        if not isinstance(item, dict):
            self.error(where, "each case is a mapping with name, events and expect")
            return None
        for key in item:
            if key not in CASE_KEYS:
                self.error(where + (key,), f"unknown case key {key!r} (allowed: "
                                           f"{', '.join(CASE_KEYS)})", key=True)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            self.error(where, "a case needs a 'name'")
            name = "?"
        line, _ = self.doc.where(where)
        case = Case(name=name, file=self.name, line=line,
                    events=self.events(where + ("events",), item.get("events")))
        expect = item.get("expect")
        if expect == "silence":
            case.silence = True
        elif isinstance(expect, dict) and expect:
            self.expect(where + ("expect",), expect, case)
        else:
            self.error(where + ("expect",) if "expect" in item else where,
                       "'expect' is 'silence' or a mapping with rules and/or actions")
        return case

    def events(self, where: tuple[Any, ...], raw: Any) -> list[dict[str, Any]]:
        if isinstance(raw, str):
            return self.events_file(where, self.path.parent / raw)
        if not isinstance(raw, list) or not raw:
            self.error(where if raw is not None else where[:-1],
                       "'events' is a non-empty list of events (objects keyed by Falco "
                       "field names) or the path of a .jsonl file")
            return []
        for index, event in enumerate(raw):
            if not isinstance(event, dict):
                self.error(where + (index,), "an event is a mapping of Falco field names "
                                             "to values")
        return [e for e in raw if isinstance(e, dict)]

    def events_file(self, where: tuple[Any, ...], path: Path) -> list[dict[str, Any]]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            self.error(where, f"cannot read events file {path}: {exc.strerror}")
            return []
        events = []
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                self.problems.append(Diagnostic(str(path), lineno, exc.colno,
                                                f"invalid JSON: {exc.msg}"))
                self.failed = True
                continue
            if not isinstance(event, dict):
                self.problems.append(Diagnostic(str(path), lineno, 1,
                                                "an event must be a JSON object"))
                self.failed = True
                continue
            events.append(event)
        if not events and not self.failed:
            self.error(where, f"events file {path} holds no event")
        return events

    def expect(self, where: tuple[Any, ...], raw: dict[str, Any], case: Case) -> None:
        for key in raw:
            if key not in EXPECT_KEYS:
                self.error(where + (key,), f"unknown expect key {key!r} (allowed: "
                                           f"{', '.join(EXPECT_KEYS)}, or expect: silence)",
                           key=True)
        if "rules" in raw:
            rules = raw["rules"]
            if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
                self.error(where + ("rules",), "expect.rules is a list of rule names")
            else:
                case.rules = list(rules)
                case.rules_at = [self.doc.where(where + ("rules", i))
                                 for i in range(len(rules))]
        if "actions" in raw:
            steps = raw["actions"]
            if not isinstance(steps, list):
                self.error(where + ("actions",), "expect.actions is a list of "
                                                 "{policy, action} steps")
            else:
                parsed = [self.step(where + ("actions", i), s) for i, s in enumerate(steps)]
                case.steps = [s for s in parsed if s is not None]

    def step(self, where: tuple[Any, ...], raw: Any) -> ExpectedStep | None:
        if not isinstance(raw, dict):
            self.error(where, "an expected step is {policy: NAME, action: NAME}")
            return None
        for key in raw:
            if key not in STEP_KEYS:
                self.error(where + (key,), f"unknown step key {key!r} (allowed: "
                                           f"{', '.join(STEP_KEYS)})", key=True)
        outcome = raw.get("outcome", "planned")
        if outcome not in OUTCOMES:
            self.error(where + ("outcome",), f"outcome must be one of {', '.join(OUTCOMES)}")
            return None
        policy, action = raw.get("policy"), raw.get("action")
        if not isinstance(policy, str):
            self.error(where, "an expected step names its 'policy'")
            return None
        if outcome != "rate-limited" and not isinstance(action, str):
            self.error(where, "an expected step names its 'action' (only a rate-limited "
                              "policy has none)")
            return None
        target, params = raw.get("target", {}), raw.get("params", {})
        if not isinstance(target, dict) or not isinstance(params, dict):
            self.error(where, "target and params are mappings")
            return None
        line, column = self.doc.where(where)
        return ExpectedStep(policy=policy, action=action if outcome != "rate-limited" else None,
                            outcome=outcome, target=target, params=params, line=line,
                            column=column)


def check_references(cases: list[Case], ruleset: Any, policies: Any) -> list[Diagnostic]:
    """A case that expects a rule that is not loaded, a policy that does not exist, or an
    action its policy does not have can never pass: say so where it is written."""
    found = []
    actions = {p.name: {s.name for s in p.actions} for p in policies.policies}
    for case in cases:
        for rule, (line, col) in zip(case.rules or [], case.rules_at, strict=False):
            if ruleset is not None and rule not in ruleset.rules:
                found.append(Diagnostic(case.file, line, col,
                                        f"case {case.name!r} expects rule {rule!r}, which is "
                                        "not loaded"))
        for step in case.steps or []:
            if step.policy not in actions:
                found.append(Diagnostic(case.file, step.line, step.column,
                                        f"case {case.name!r} expects policy {step.policy!r}, "
                                        "which is not loaded"))
            elif step.action is not None and step.action not in actions[step.policy]:
                found.append(Diagnostic(case.file, step.line, step.column,
                                        f"case {case.name!r} expects action {step.action!r} "
                                        f"of policy {step.policy!r}, which has only "
                                        f"{', '.join(sorted(actions[step.policy]))}"))
    return found
