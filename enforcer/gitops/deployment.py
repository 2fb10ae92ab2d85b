"""Which actions the deployment allows, as the agent is told it: the Helm chart renders
`actions.<name>.enabled` into ENFORCER_ENABLED_ACTIONS (comma-separated, empty = none).

`enforcer validate` takes the same information from `--enabled-actions`, the environment
variable, `--disabled-actions`, or the Helm values file itself (`--values`), so that CI
refuses a policy that the cluster would never be allowed to carry out."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from actions import registry

ENV = "ENFORCER_ENABLED_ACTIONS"

#: chart value key (charts/enforcer/values.yaml `actions:`) -> action name
VALUES_KEYS = {"kill": "kill", "deletePod": "delete_pod", "labelPod": "label_pod",
               "cordon": "cordon", "networkpolicy": "networkpolicy",
               "quarantine": "quarantine", "snapshot": "snapshot", "notify": "notify"}


class DeploymentError(ValueError):
    """The deployment description is wrong (unknown action, unreadable values file)."""


def parse_names(text: str, what: str) -> set[str]:
    """Comma-separated action names; unknown names raise DeploymentError."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(registry.names()))
    if unknown:
        raise DeploymentError(f"{what}: unknown action {', '.join(map(repr, unknown))} "
                              f"(known: {', '.join(registry.names())})")
    return names


def from_values(path: str | Path) -> set[str]:
    """Enabled actions from a Helm values file of charts/enforcer (missing = enabled, as
    in the chart's defaults)."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise DeploymentError(f"cannot read values file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise DeploymentError(f"values file {path} is not valid YAML: {exc}") from None
    actions = values.get("actions") if isinstance(values, dict) else None
    actions = actions if isinstance(actions, dict) else {}
    enabled = set()
    for key, name in VALUES_KEYS.items():
        entry = actions.get(key)
        if not isinstance(entry, dict) or entry.get("enabled", True) is not False:
            enabled.add(name)
    return enabled


def enabled_actions(enabled: str | None = None, disabled: str | None = None,
                    values: Iterable[str | Path] = (),
                    environ: dict[str, str] | None = None) -> set[str] | None:
    """The allowed actions, or None when nothing says (then every action is allowed).

    Precedence: `enabled` (flag) over the environment variable; each values file and
    `disabled` then remove actions."""
    environ = os.environ if environ is None else environ
    allowed: set[str] | None = None
    if enabled is not None:
        allowed = parse_names(enabled, "--enabled-actions")
    elif ENV in environ:
        allowed = parse_names(environ[ENV], ENV)
    for path in values:
        allowed = from_values(path) if allowed is None else allowed & from_values(path)
    if disabled:
        allowed = (set(registry.names()) if allowed is None else allowed) - parse_names(
            disabled, "--disabled-actions")
    return allowed
