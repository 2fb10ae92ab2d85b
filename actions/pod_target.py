"""Resolving the pod an alert is about, with the guards every pod action shares: valid
names, not a protected namespace, scheduled on this node, still there."""

from __future__ import annotations

from typing import Any

from actions.base import AlreadyDone
from actions.context import ActionContext
from actions.names import valid_namespace, valid_object_name
from enforcer.adapters.kube_errors import NotFound

POD_FIELDS = ("k8s.ns.name", "k8s.pod.name")


def resolve_pod(context: ActionContext) -> tuple[str, str, dict[str, Any]]:
    """(namespace, name, pod). Raises Refused (guards, bad names) or AlreadyDone (gone)."""
    namespace = valid_namespace(context.field("k8s.ns.name"))
    name = valid_object_name(context.field("k8s.pod.name"))
    context.guards.check_namespace(namespace)
    try:
        pod = context.services.kube.get_pod(namespace, name)
    except NotFound:
        raise AlreadyDone(f"pod {namespace}/{name} is already gone") from None
    node = (pod.get("spec") or {}).get("nodeName")
    context.guards.check_node(f"{namespace}/{name}", node)
    return namespace, name, pod


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"
