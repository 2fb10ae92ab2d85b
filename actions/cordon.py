"""cordon — mark this node unschedulable, optionally with a taint (e.g. NoExecute to evict).

RBAC: nodes: get, patch.

Acts only on the agent's own node (NODE_NAME). Idempotent: a node already cordoned (and
tainted) is `noop`. Dry-run sends the PATCH with dryRun=All.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actions.base import DONE, DRY_RUN, Action, AlreadyDone, Outcome, Params, Plan, Refused, param
from actions.context import ActionContext
from actions.label_pod import labels as _labels
from actions.names import valid_object_name

EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _taint(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"expected {{key, value, effect}}, got {value!r}")
    unknown = set(value) - {"key", "value", "effect"}
    if unknown:
        raise ValueError(f"unknown taint keys {sorted(unknown)}; allowed: key, value, effect")
    key = value.get("key")
    effect = value.get("effect", "NoSchedule")
    if effect not in EFFECTS:
        raise ValueError(f"effect must be one of {', '.join(EFFECTS)}; got {effect!r}")
    if not isinstance(key, str) or not key:
        raise ValueError("a taint needs a key")
    _labels({key: str(value.get("value", ""))})  # same syntax rules as labels
    taint = {"key": key, "effect": effect}
    if value.get("value") not in (None, ""):
        taint["value"] = str(value["value"])
    return taint


@dataclass(frozen=True)
class CordonParams(Params):
    taint: dict[str, str] | None = param(None, parse=_taint, schema={
        "type": "object", "additionalProperties": False,
        "properties": {"key": {"type": "string"}, "value": {"type": "string"},
                       "effect": {"enum": list(EFFECTS)}}, "required": ["key"]},
        doc="also add this taint")


class Cordon(Action):
    name = "cordon"
    params_type = CordonParams
    destructive = True
    rbac = ({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},)
    example = "- cordon: {taint: {key: enforcer.io/compromised, effect: NoSchedule}}"
    params: CordonParams

    def plan(self, context: ActionContext) -> Plan:
        if not context.node_name:
            raise Refused("node", "NODE_NAME is not set: the agent only cordons its own node")
        node_name = valid_object_name(context.node_name)
        node = context.services.kube.get_node(node_name)
        spec = node.get("spec") or {}
        taints = list(spec.get("taints") or [])
        wanted = self.params.taint
        has_taint = wanted is None or any(
            t.get("key") == wanted["key"] and t.get("effect") == wanted["effect"]
            for t in taints)
        if spec.get("unschedulable") and has_taint:
            raise AlreadyDone(f"node {node_name} is already cordoned")
        patch: dict[str, Any] = {"spec": {"unschedulable": True}}
        if not has_taint:
            patch["spec"]["taints"] = taints + [dict(wanted)]
        return Plan(action=self.name, target={"node": node_name},
                    render={"method": "PATCH", "path": f"/api/v1/nodes/{node_name}",
                            "content_type": "application/merge-patch+json", "body": patch},
                    summary=f"cordon node {node_name}"
                            + (f" with taint {wanted['key']}:{wanted['effect']}"
                               if wanted else ""),
                    private={"kube": context.services.kube})

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        plan.private["kube"].patch_node(plan.target["node"], plan.render["body"], dry_run)
        if dry_run:
            return Outcome(DRY_RUN, f"would {plan.summary} (the API server accepted "
                                    "dryRun=All)")
        return Outcome(DONE, plan.summary)


ACTION = Cordon
