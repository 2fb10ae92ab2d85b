"""Every response by name. Adding an action = adding its module here."""

from __future__ import annotations

import importlib

from actions.base import Action

ACTION_MODULES = {
    "kill": "actions.kill",
    "snapshot": "actions.snapshot",
    "quarantine": "actions.quarantine",
    "networkpolicy": "actions.networkpolicy",
    "delete_pod": "actions.delete_pod",
    "label_pod": "actions.label_pod",
    "cordon": "actions.cordon",
    "notify": "actions.notify",
}


def names() -> list[str]:
    return list(ACTION_MODULES)


def get(name: str) -> type[Action]:
    """The Action class called `name`. Raises KeyError for an unknown name."""
    module = importlib.import_module(ACTION_MODULES[name])
    return module.ACTION


def all_actions() -> list[type[Action]]:
    return [get(n) for n in ACTION_MODULES]


def rbac_rules() -> list[dict]:
    """The ClusterRole rules every action together needs (for the Helm chart), merged by
    apiGroup and resource."""
    merged: dict[tuple[str, str], set[str]] = {}
    for action in all_actions():
        for rule in action.rbac:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    merged.setdefault((group, resource), set()).update(rule["verbs"])
    return [{"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
            for (group, resource), verbs in sorted(merged.items())]
