"""delete_pod — delete the pod the alert is about (its controller may recreate it clean).

RBAC: pods: get, delete.

Idempotent: a pod already gone is `noop`. Only pods on this node, never in a protected
namespace. Dry-run sends the DELETE with dryRun=All.
"""

from __future__ import annotations

from dataclasses import dataclass

from actions.base import DONE, DRY_RUN, NOOP, Action, Outcome, Params, Plan, param
from actions.context import ActionContext
from actions.pod_target import POD_FIELDS, pod_path, resolve_pod
from enforcer.adapters.kube_errors import NotFound


@dataclass(frozen=True)
class DeletePodParams(Params):
    grace_period: int | None = param(None, doc="seconds; 0 deletes at once; default: the "
                                               "pod's own terminationGracePeriodSeconds")

    def __post_init__(self) -> None:
        if self.grace_period is not None and self.grace_period < 0:
            error = ValueError("grace_period must be 0 or more seconds")
            error.key = "grace_period"  # type: ignore[attr-defined]
            raise error


class DeletePod(Action):
    name = "delete_pod"
    params_type = DeletePodParams
    required_fields = POD_FIELDS
    target_fields = POD_FIELDS
    destructive = True
    rbac = ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]},)
    example = "- delete_pod: {grace_period: 0}"
    params: DeletePodParams

    def plan(self, context: ActionContext) -> Plan:
        namespace, name, pod = resolve_pod(context)
        query = {} if self.params.grace_period is None else {
            "gracePeriodSeconds": self.params.grace_period}
        return Plan(action=self.name,
                    target={"namespace": namespace, "pod": name,
                            "uid": pod.get("metadata", {}).get("uid")},
                    render={"method": "DELETE", "path": pod_path(namespace, name),
                            "query": query},
                    summary=f"delete pod {namespace}/{name}",
                    private={"kube": context.services.kube})

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        kube = plan.private["kube"]
        try:
            kube.delete_pod(plan.target["namespace"], plan.target["pod"],
                            self.params.grace_period, dry_run)
        except NotFound:
            return Outcome(NOOP, f"pod {plan.target['namespace']}/{plan.target['pod']} was "
                                 "already gone")
        if dry_run:
            return Outcome(DRY_RUN, f"would {plan.summary} (the API server accepted "
                                    "dryRun=All)")
        return Outcome(DONE, plan.summary)


ACTION = DeletePod
