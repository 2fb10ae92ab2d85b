"""label_pod — add labels to the pod the alert is about (for selectors, triage, policies).

RBAC: pods: get, patch.

Idempotent: labels already set are `noop`. Dry-run sends the PATCH with dryRun=All.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from actions.base import DONE, DRY_RUN, Action, AlreadyDone, Outcome, Params, Plan, param
from actions.context import ActionContext
from actions.pod_target import POD_FIELDS, pod_path, resolve_pod
from enforcer.adapters.kube_errors import NotFound

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}"
                  r"[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def labels(value: Any) -> dict[str, str]:
    """Kubernetes label keys and values, validated."""
    if not isinstance(value, dict) or not value:
        raise ValueError(f"expected a mapping of label keys to values, got {value!r}")
    out = {}
    for key, val in value.items():
        if isinstance(val, bool) or not isinstance(val, str | int):
            raise ValueError(f"label {key!r}: expected a string value, got {val!r}")
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"{key!r} is not a valid label key")
        if not _VALUE.match(str(val)):
            raise ValueError(f"{val!r} is not a valid label value for {key!r}")
        out[key] = str(val)
    return out


@dataclass(frozen=True)
class LabelPodParams(Params):
    labels: dict[str, str] = param(parse=labels, schema={
        "type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1},
        doc="labels to set")


class LabelPod(Action):
    name = "label_pod"
    params_type = LabelPodParams
    required_fields = POD_FIELDS
    target_fields = POD_FIELDS
    rbac = ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]},)
    example = "- label_pod: {labels: {enforcer.io/suspicious: 'true'}}"
    params: LabelPodParams

    def plan(self, context: ActionContext) -> Plan:
        namespace, name, pod = resolve_pod(context)
        current = (pod.get("metadata") or {}).get("labels") or {}
        if all(current.get(k) == v for k, v in self.params.labels.items()):
            raise AlreadyDone(f"pod {namespace}/{name} already has the labels")
        patch = {"metadata": {"labels": dict(self.params.labels)}}
        return Plan(action=self.name, target={"namespace": namespace, "pod": name},
                    render={"method": "PATCH", "path": pod_path(namespace, name),
                            "content_type": "application/merge-patch+json", "body": patch},
                    summary=f"label pod {namespace}/{name} with {self.params.labels}",
                    private={"kube": context.services.kube})

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        try:
            plan.private["kube"].patch_pod(plan.target["namespace"], plan.target["pod"],
                                           plan.render["body"], dry_run)
        except NotFound:
            raise AlreadyDone("the pod is gone") from None
        if dry_run:
            return Outcome(DRY_RUN, f"would {plan.summary} (the API server accepted "
                                    "dryRun=All)")
        return Outcome(DONE, plan.summary)


ACTION = LabelPod
