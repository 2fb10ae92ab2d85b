"""Falco Talon rule files as response policies: `enforcer policies import-talon FILE...`.

Talon's files are converted, not loaded as they are: the result is our policy YAML, which a
person reviews and commits (GitOps), because Talon and the agent differ where it matters —
Talon acts by default, runs the first matching rules in order and stops on `continue:
false`, silently ignores parameters it does not know, and builds shell commands from event
fields. Each imported policy says where it came from; each piece that cannot be carried
over is refused with the reason at FILE:LINE:COL, and a refused piece never widens what a
policy does: an action refused is left out (the policy does less), a rule left without
actions is not imported at all.

What carries over:
- `- action:` blocks, reusable by name, merged as Talon merges them (later files override
  fields; a rule's own `parameters` override the block's, lists are appended);
- `- rule:` with `match` (`rules`, `priority` with `>=`/`>`/`<=`/`<` or exact, `source`,
  `tags` — each string all-of, the list any-of: one policy per tag group — and
  `output_fields` — each string `k=v, k!=v` all-of, the list any-of: `match.fields`);
- `actions` with `parameters`; an action's `continue: false` (and kubernetes:terminate's
  default) ends the rule's actions, as in Talon; `ignore_errors` on every action is our
  `on_failure: continue`, otherwise `stop`;
- `dry_run`: imported policies are always `dry_run: true` until a person flips them;
- a rule's `continue: false` is our `final: true` (the matching policies after it do not
  answer its alerts); when that rule is not imported, the loss is said, since the policies
  after it then answer alerts that Talon's would not;
- `notifiers` (and Talon's `default_notifiers`, from its configuration given with
  `--talon-config`): `webhook` is a `notify` action after the policy's actions (its URL,
  `custom_headers` and `user_agent` come from Talon's configuration); `k8sevents` is the
  agent's own `--kubernetes-events true` (a note); the others are refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from enforcer.errors import Diagnostic
from enforcer.policy.located import Located, load_located, yaml_problem

_PRIORITIES = ("emergency", "alert", "critical", "error", "warning", "notice",
               "informational", "debug")
_ACTION_KEYS = {"action", "description", "actionner", "parameters", "continue",
                "ignore_errors", "additional_contexts", "output"}
_RULE_KEYS = {"rule", "description", "match", "actions", "continue", "dry_run", "notifiers"}
_MATCH_KEYS = {"rules", "priority", "source", "tags", "output_fields"}
# Talon actionners that end a rule's actions unless `continue: true` (Talon's defaults)
_STOPS = {"kubernetes:terminate", "kubernetes:delete", "kubernetes:tcpdump",
          "kubernetes:sysdig"}
_REFUSED = {
    "kubernetes:drain": "enforcer has no drain: evicting every pod of a node is beyond a "
                        "node agent's blast radius; kubernetes:cordon is offered",
    "kubernetes:delete": "deleting arbitrary resources (from k8s_audit events) is not "
                         "offered; pods are deleted by kubernetes:terminate",
    "kubernetes:annotation": "annotations are not offered; kubernetes:label is",
    "kubernetes:exec": "runs a command in the pod, built from event fields: never offered "
                       "(no action builds a shell command from event data)",
    "kubernetes:script": "runs a script in the pod: never offered (no action builds a shell "
                         "command from event data)",
    "kubernetes:log": "pod logs are not collected; the snapshot action keeps files",
    "kubernetes:download": "copies a file named by event fields: use the snapshot action "
                           "with fixed paths",
    "kubernetes:tcpdump": "packet captures are not offered",
    "kubernetes:sysdig": "sysdig captures are not offered",
    "calico:networkpolicy": "Calico policies are not offered: kubernetes:networkpolicy "
                            "(a standard NetworkPolicy) is",
    "cilium:networkpolicy": "Cilium policies are not offered: kubernetes:networkpolicy "
                            "(a standard NetworkPolicy) is",
    "aws:lambda": "cloud functions are not offered",
    "gcp:function": "cloud functions are not offered",
}


@dataclass
class Imported:
    """The policies (plain data, our schema), and every refusal or note, located."""

    policies: list[dict[str, Any]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)  # "FILE:LINE (Talon rule 'X')"
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def refused(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def to_yaml(self) -> str:
        """Our policy file, each policy under a comment naming its Talon rule."""
        head = ("# Imported from Falco Talon rules by `enforcer policies import-talon`.\n"
                "# Every policy is dry_run: true: review it, then set dry_run: false.\n")
        parts = [head]
        for origin, policy in zip(self.origins, self.policies, strict=True):
            parts.append(f"\n# {origin}\n" + yaml.safe_dump([policy], sort_keys=False,
                                                             allow_unicode=True))
        return "".join(parts)


@dataclass
class _Item:
    data: dict[str, Any]
    file: str
    doc: Located
    index: int

    def where(self, *path: Any, key: bool = False) -> tuple[str, int, int]:
        line, col = self.doc.where((self.index, *path), key=key)
        return self.file, line, col


@dataclass
class _Config:
    """The notifier part of Talon's configuration file (config.yaml), located."""

    file: str = ""
    doc: Located | None = None
    notifiers: dict[str, Any] = field(default_factory=dict)
    defaults: list[str] = field(default_factory=list)

    def where(self, *path: Any) -> tuple[str, int, int]:
        line, col = self.doc.where(path) if self.doc is not None else (1, 1)
        return self.file, line, col


def _read_config(path: str | Path | None, out: Imported) -> _Config:
    if path is None:
        return _Config()
    name = str(path)
    try:
        doc = load_located(Path(name).read_text(encoding="utf-8"))
    except OSError as exc:
        out.diagnostics.append(Diagnostic(name, 1, 1, f"cannot read: {exc.strerror}"))
        return _Config()
    except yaml.YAMLError as exc:
        line, col, problem = yaml_problem(exc)
        out.diagnostics.append(Diagnostic(name, line, col, f"invalid YAML: {problem}"))
        return _Config()
    data = doc.data if isinstance(doc.data, dict) else {}
    notifiers = data.get("notifiers") if isinstance(data.get("notifiers"), dict) else {}
    defaults = data.get("default_notifiers") or []
    if not isinstance(defaults, list):
        defaults = []
    return _Config(name, doc, notifiers, [str(d) for d in defaults])


def import_talon(paths: list[str | Path], talon_config: str | Path | None = None
                 ) -> Imported:
    """Convert Talon rule files (in order, later ones overriding) into our policies;
    `talon_config` is Talon's config.yaml, where its notifiers are configured."""
    out = Imported()
    config = _read_config(talon_config, out)
    actions: dict[str, list[_Item]] = {}
    rules: dict[str, list[_Item]] = {}
    order: list[str] = []
    for path in paths:
        for item in _read(str(path), out):
            if "action" in item.data:
                _known(item, _ACTION_KEYS, "an action block", out)
                actions.setdefault(str(item.data["action"]), []).append(item)
            elif "rule" in item.data:
                _known(item, _RULE_KEYS, "a rule", out)
                name = str(item.data["rule"])
                if name not in rules:
                    order.append(name)
                rules.setdefault(name, []).append(item)
            else:
                out.diagnostics.append(Diagnostic(*item.where(), "each item is `- action:` or "
                                                                 "`- rule:`"))
    for name in order:
        items = rules[name]
        imported = _rule(name, items, actions, config, out)
        if not imported and _flag(_merged(items).get("continue")) is False:
            out.diagnostics.append(Diagnostic(
                *items[0].where("continue"), f"rule {name!r}: not imported, so its "
                "continue: false is lost: the policies after it also answer its alerts; "
                "import the rules after it with care"))
    return out


def _read(name: str, out: Imported) -> list[_Item]:
    try:
        doc = load_located(Path(name).read_text(encoding="utf-8"))
    except OSError as exc:
        out.diagnostics.append(Diagnostic(name, 1, 1, f"cannot read: {exc.strerror}"))
        return []
    except yaml.YAMLError as exc:
        line, col, problem = yaml_problem(exc)
        out.diagnostics.append(Diagnostic(name, line, col, f"invalid YAML: {problem}"))
        return []
    if doc.data is None:
        return []
    if not isinstance(doc.data, list):
        out.diagnostics.append(Diagnostic(name, 1, 1, "a Talon rule file is a YAML list of "
                                                      "`- action:` and `- rule:` items"))
        return []
    items = []
    for index, data in enumerate(doc.data):
        if isinstance(data, dict):
            items.append(_Item(data, name, doc, index))
        else:
            line, col = doc.where((index,))
            out.diagnostics.append(Diagnostic(name, line, col, "expected a mapping"))
    return items


def _known(item: _Item, keys: set[str], what: str, out: Imported) -> None:
    for key in item.data:
        if key not in keys:
            out.diagnostics.append(Diagnostic(
                *item.where(key, key=True), f"unknown key {key!r} in {what} (Talon would "
                f"ignore it; allowed: {', '.join(sorted(keys))})", severity="warning"))


def _merged(items: list[_Item]) -> dict[str, Any]:
    """Talon's override of same-named items: later non-empty fields win, parameters merge."""
    merged: dict[str, Any] = {}
    for item in items:
        for key, value in item.data.items():
            if key == "parameters" and isinstance(value, dict):
                merged["parameters"] = {**merged.get("parameters", {}), **value}
            elif value not in (None, ""):
                merged[key] = value
    return merged


def _flag(value: Any) -> bool | None:
    if value in (None, ""):
        return None
    return str(value).lower() == "true"


def _rule(name: str, items: list[_Item], actions: dict[str, list[_Item]], config: _Config,
          out: Imported) -> bool:
    """Add the rule's policies to `out`; False when it is not imported."""
    rule = _merged(items)
    first = items[0]
    origin = f"{first.file}:{first.where()[1]} (Talon rule {name!r})"
    match = rule.get("match") or {}
    if not isinstance(match, dict) or not match:
        out.diagnostics.append(Diagnostic(*first.where("rule"), f"rule {name!r}: refused: "
                                          "no match (Talon would answer every alert)"))
        return False
    for key in match:
        if key not in _MATCH_KEYS:
            out.diagnostics.append(Diagnostic(*first.where("match", key, key=True),
                                              f"rule {name!r}: unknown match key {key!r}",
                                              severity="warning"))
    ours: dict[str, Any] = {}
    if match.get("rules"):
        ours["rules"] = [str(r) for r in match["rules"]]
    if match.get("source"):
        ours["source"] = str(match["source"])
    if match.get("priority"):
        priority = _priority(str(match["priority"]))
        if priority is None:
            out.diagnostics.append(Diagnostic(*first.where("match", "priority"),
                                              f"rule {name!r}: refused: priority "
                                              f"{match['priority']!r} is not >=/>/<=/< and a "
                                              "Falco priority"))
            return False
        ours["priority"] = priority
    if match.get("output_fields"):
        fields = _output_fields(match["output_fields"])
        if fields is None:
            out.diagnostics.append(Diagnostic(*first.where("match", "output_fields"),
                                              f"rule {name!r}: refused: output_fields are "
                                              "'key=value' or 'key!=value', comma-separated"))
            return False
        ours["fields"] = fields
    steps, on_failure = _actions(name, first, rule.get("actions") or [], actions, out)
    if not steps:
        out.diagnostics.append(Diagnostic(*first.where("rule"), f"rule {name!r}: not "
                                          "imported: none of its actions is offered (see "
                                          "above)"))
        return False
    steps = steps + _notifiers(name, first, rule, config, out)
    groups = [[t.strip() for t in str(g).split(",") if t.strip()]
              for g in match.get("tags") or []] or [[]]
    for index, tags in enumerate(groups):
        policy_match = dict(ours)
        if tags:
            policy_match["tags"] = tags
        if not policy_match:
            out.diagnostics.append(Diagnostic(*first.where("match"), f"rule {name!r}: "
                                              "refused: its match selects nothing we read"))
            return False
        policy: dict[str, Any] = {
            "policy": name if len(groups) == 1 else f"{name} (tags {index + 1})",
            "desc": " ".join(str(rule.get("description") or f"Talon rule {name}").split()),
            "match": policy_match, "actions": steps, "dry_run": True,
            "on_failure": on_failure}
        if _flag(rule.get("continue")) is False:
            policy["final"] = True
        out.policies.append(policy)
        out.origins.append(origin)
    return True


_NOTIFIERS_REFUSED = {
    "slack": "Slack is not offered; the notify action POSTs the alert and the outcomes to a "
             "webhook (Falcosidekick's, say, which speaks Slack)",
    "smtp": "e-mail is not offered; notify POSTs to a webhook (Falcosidekick's, say)",
    "loki": "Loki is not offered; the audit log (JSONL) and the OpenTelemetry traces carry "
            "every outcome",
    "elasticsearch": "Elasticsearch is not offered; the audit log (JSONL) and the "
                     "OpenTelemetry traces carry every outcome",
}


def _notifiers(name: str, first: _Item, rule: dict[str, Any], config: _Config,
               out: Imported) -> list[dict[str, Any]]:
    """`notify` steps for the rule's notifiers and Talon's default_notifiers (each once)."""
    listed = rule.get("notifiers") or []
    wanted: dict[str, tuple[str, int, int]] = {}
    for index, notifier in enumerate(config.defaults):
        wanted.setdefault(notifier, config.where("default_notifiers", index))
    for index, notifier in enumerate(listed if isinstance(listed, list) else [listed]):
        wanted.setdefault(str(notifier), first.where("notifiers", index))
    steps = []
    for notifier, where in wanted.items():
        label = f"rule {name!r}: notifier {notifier!r}"
        if notifier == "k8sevents":
            out.diagnostics.append(Diagnostic(*where, f"{label} is the agent's "
                                              "--kubernetes-events true (an Event per "
                                              "outcome), not a policy action",
                                              severity="warning"))
        elif notifier == "webhook":
            mapped = _webhook(config)
            if isinstance(mapped, str):
                out.diagnostics.append(Diagnostic(*where, f"{label} refused: {mapped}"))
            else:
                steps.append(mapped)
        else:
            reason = _NOTIFIERS_REFUSED.get(notifier, "not a Talon notifier we know")
            out.diagnostics.append(Diagnostic(*where, f"{label} refused: {reason}"))
    return steps


def _webhook(config: _Config) -> dict[str, Any] | str:
    """Our notify step for Talon's webhook notifier, or why not."""
    settings = config.notifiers.get("webhook")
    if not isinstance(settings, dict) or not settings.get("url"):
        return ("its URL is in Talon's configuration; give it with --talon-config "
                "config.yaml (notifiers.webhook.url)")
    method = str(settings.get("http_method") or "POST").upper()
    if method != "POST":
        return f"http_method {method}: notify only POSTs"
    headers = {str(k): str(v) for k, v in (settings.get("custom_headers") or {}).items()}
    if settings.get("user_agent"):
        headers["User-Agent"] = str(settings["user_agent"])
    params: dict[str, Any] = {"url": str(settings["url"])}
    if headers:
        params["headers"] = headers
    return {"notify": params}


def _priority(text: str) -> str | None:
    text = text.strip()
    op = next((o for o in (">=", "<=", ">", "<") if text.startswith(o)), "==")
    word = text[len(op):].strip().lower() if op != "==" else text.lower()
    if word == "info":
        word = "informational"
    return f"{op}{word}" if word in _PRIORITIES else None


def _output_fields(raw: Any) -> Any:
    """Talon's list (any-of) of 'k=v, k!=v' strings (all-of) as our match.fields."""
    if not isinstance(raw, list):
        return None
    groups = []
    for text in raw:
        group: dict[str, Any] = {}
        for part in str(text).split(","):
            part = part.strip()
            key, neg, value = part.partition("!=")
            if not neg:
                key, eq, value = part.partition("=")
                if not eq or not key.strip():
                    return None
            key, value = key.strip(), value.strip().replace('"', "")
            entry = group.setdefault(key, {})
            entry.setdefault("not" if neg else "in", []).append(value)
        groups.append({k: (v["in"][0] if list(v) == ["in"] and len(v["in"]) == 1 else v)
                       for k, v in group.items()})
    return groups[0] if len(groups) == 1 else groups


def _actions(rule: str, first: _Item, listed: list[Any], blocks: dict[str, list[_Item]],
             out: Imported) -> tuple[list[dict[str, Any]], str]:
    steps: list[dict[str, Any]] = []
    ignore_all = True
    for index, entry in enumerate(listed):
        where = first.where("actions", index)
        if not isinstance(entry, dict) or "action" not in entry:
            out.diagnostics.append(Diagnostic(*where, f"rule {rule!r}: each action is "
                                                      "`- action: NAME`"))
            continue
        block = _merged(blocks.get(str(entry["action"]), []))
        action = {**block, **{k: v for k, v in entry.items() if k != "parameters"}}
        params = dict(block.get("parameters") or {})
        for key, value in (entry.get("parameters") or {}).items():
            old = params.get(key)
            params[key] = old + value if isinstance(old, list) and isinstance(value, list) \
                else value
        actionner = str(action.get("actionner") or "")
        label = f"rule {rule!r}, action {entry['action']!r} ({actionner or 'no actionner'})"
        if not actionner:
            out.diagnostics.append(Diagnostic(*where, f"{label}: refused: no actionner, and "
                                                      "no `- action:` block of that name"))
            continue
        mapped = _map(actionner, params)
        if isinstance(mapped, str):
            out.diagnostics.append(Diagnostic(*where, f"{label}: refused: {mapped}"))
        else:
            steps.append(mapped)
            ignore_all = ignore_all and _flag(action.get("ignore_errors")) is True
        keep_going = _flag(action.get("continue"))
        if keep_going is False or (keep_going is None and actionner in _STOPS):
            if index + 1 < len(listed):
                out.diagnostics.append(Diagnostic(*first.where("actions", index + 1),
                                                  f"rule {rule!r}: the actions after "
                                                  f"{entry['action']!r} never run in Talon "
                                                  "(continue: false): left out",
                                                  severity="warning"))
            break
    return steps, "continue" if ignore_all and steps else "stop"


def _map(actionner: str, params: dict[str, Any]) -> dict[str, Any] | str:
    """Our action for a Talon actionner and its parameters, or the reason it is refused."""
    if actionner in _REFUSED:
        return _REFUSED[actionner]

    def unknown(allowed: set[str]) -> str | None:
        extra = sorted(set(params) - allowed)
        return (f"unknown parameter {extra[0]!r} (Talon ignores unknown parameters; "
                f"{actionner} takes {', '.join(sorted(allowed)) or 'none'})") if extra else None

    if actionner == "kubernetes:terminate":
        problem = unknown({"grace_period_seconds", "ignore_daemonsets", "ignore_statefulsets",
                           "ignore_standalone_pods", "min_healthy_replicas"})
        if problem:
            return problem
        wider = [k for k in ("ignore_daemonsets", "ignore_statefulsets",
                             "ignore_standalone_pods") if params.get(k)]
        if wider or params.get("min_healthy_replicas"):
            return (f"{', '.join(wider) or 'min_healthy_replicas'}: the agent cannot check a "
                    "pod's owner before deleting it, so this protection would be lost; drop "
                    "the parameter to accept deleting any matched pod")
        grace = params.get("grace_period_seconds")
        return {"delete_pod": {"grace_period": int(grace)} if grace is not None else None}
    if actionner == "kubernetes:networkpolicy":
        problem = unknown({"allow_cidr", "allow_namespaces"})
        if problem:
            return problem
        if params.get("allow_namespaces"):
            return ("allow_namespaces: the NetworkPolicy isolates the pod both ways and allows "
                    "only DNS and CIDRs; drop it or list the namespaces' CIDRs in allow_cidr")
        cidrs = [str(c) for c in params.get("allow_cidr") or []]
        return {"networkpolicy": {"allowed_cidrs": cidrs} if cidrs else None}
    if actionner == "kubernetes:label":
        problem = unknown({"labels", "level"})
        if problem:
            return problem
        if str(params.get("level") or "pod") != "pod":
            return "level: node: only pods are labelled (cordon marks a node)"
        labels = params.get("labels")
        if not isinstance(labels, dict) or not labels:
            return "labels: a mapping of label keys to values is required"
        if any(v == "" or v is None for v in labels.values()):
            return "a label with an empty value removes it in Talon; removing is not offered"
        return {"label_pod": {"labels": {str(k): str(v) for k, v in labels.items()}}}
    if actionner == "kubernetes:cordon":
        problem = unknown(set())
        return problem or {"cordon": None}
    return f"unknown actionner {actionner!r}"
