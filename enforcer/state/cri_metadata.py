"""Container metadata from CRI answers (containerd, cri-o), mapped to Falco's fields the way
Falco's CRI engine maps them (pure: the answers come from enforcer.adapters.cri as dicts).

- container.name: the container's name in the pod spec (`metadata.name`), as Falco shows it
  for Kubernetes containers; for a pod sandbox (pause) container, the pod's name.
- container.image: `image.image`; when the runtime gives only an image id there
  (`sha256:...`), the name the runtime recorded in the OCI spec's annotations
  (containerd `io.kubernetes.cri.image-name`, cri-o `io.kubernetes.cri-o.Image[Name]`); when
  `image_ref` is `repo@sha256:...`, that repository with the tag of `image.image`.
- container.image.repository / .tag: that name split; container.image.id: the image's id.
- container.privileged: from the verbose `info` document: containerd's
  `config.linux.security_context.privileged` (older ones: `runtimeSpec.linux.security_context`),
  cri-o's top-level `privileged`; false when absent.
- container.mounts: `status.mounts` (host path, container path, rw = not readonly, propagation
  private / rslave / rshared).
- k8s.pod.name / k8s.ns.name / k8s.pod.uid: the kubelet's labels on the container
  (io.kubernetes.pod.*), else the sandbox's metadata; k8s.pod.labels: the sandbox's labels.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from enforcer.state.containers import (
    K8S_NAMESPACE,
    K8S_POD_NAME,
    K8S_POD_UID,
    ContainerInfo,
    split_image,
)

_PROPAGATION = {"PROPAGATION_PRIVATE": "private", "PROPAGATION_HOST_TO_CONTAINER": "rslave",
                "PROPAGATION_BIDIRECTIONAL": "rshared"}
_IMAGE_NAME_ANNOTATIONS = ("io.kubernetes.cri.image-name", "io.kubernetes.cri-o.Image",
                           "io.kubernetes.cri-o.ImageName")


def verbose_info(answer: dict[str, Any]) -> dict[str, Any]:
    """The JSON document under the verbose answer's `info` key ({} when absent or bad)."""
    text = (answer.get("info") or {}).get("info")
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def sandbox_id(answer: dict[str, Any]) -> str | None:
    """The pod sandbox a ContainerStatus answer's container belongs to."""
    found = verbose_info(answer).get("sandboxID")
    return found if isinstance(found, str) and found else None


def container_pid(answer: dict[str, Any]) -> int | None:
    """The host pid of the container's first process, from the verbose info."""
    pid = verbose_info(answer).get("pid")
    return pid if isinstance(pid, int) and pid > 0 else None


def _walk(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def privileged(info: dict[str, Any]) -> bool:
    """Falco's order: old containerd, containerd, cri-o; false when none says."""
    for path in (("runtimeSpec", "linux", "security_context", "privileged"),
                 ("config", "linux", "security_context", "privileged"),
                 ("privileged",)):
        value = _walk(info, *path)
        if isinstance(value, bool):
            return value
    return False


def image_fields(status: dict[str, Any], info: dict[str, Any]
                 ) -> tuple[str | None, str | None, str | None, str | None]:
    """(image, repository, tag, image id) of a ContainerStatus."""
    image_ref = status.get("image_ref") or ""
    spec_image = (status.get("image") or {}).get("image") or ""
    name = spec_image
    tag_from_spec = False
    at = image_ref.find("@sha256:")
    if at > 0:  # repo@sha256:digest: the repository from here, the tag from image.image
        name, tag_from_spec = image_ref[:at], True
    if not name or name.startswith("sha256"):
        annotations = _walk(info, "runtimeSpec", "annotations") or {}
        for key in _IMAGE_NAME_ANNOTATIONS:
            if isinstance(annotations.get(key), str) and annotations[key]:
                name, tag_from_spec = annotations[key], False
                break
    if not name or name.startswith("sha256:"):
        image, repo, tag = None, None, None
    else:
        repo, tag = split_image(name)
        if tag_from_spec:
            tag = (split_image(spec_image)[1]
                   if spec_image and not spec_image.startswith("sha256:") else None)
            image = f"{repo}:{tag}" if tag else repo
        else:
            image = name
    image_id = status.get("image_id") or (image_ref if image_ref.startswith("sha256:") else "")
    return image, repo, tag, image_id.removeprefix("sha256:") or None


def mounts(status: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """status.mounts in the shape of ContainerInfo.mounts."""
    return tuple(
        {"source": m.get("host_path", ""), "dest": m.get("container_path", ""), "mode": "",
         "rw": not m.get("readonly", False),
         "propagation": _PROPAGATION.get(m.get("propagation", "PROPAGATION_PRIVATE"),
                                         "unknown")}
        for m in status.get("mounts") or [])


def _pod_identity(sandbox: dict[str, Any]) -> dict[str, str]:
    meta = sandbox.get("metadata") or {}
    found = {K8S_POD_NAME: meta.get("name"), K8S_NAMESPACE: meta.get("namespace"),
             K8S_POD_UID: meta.get("uid")}
    return {k: v for k, v in found.items() if v}


def _ns(value: Any) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def info_from_container_status(full_id: str, answer: dict[str, Any],
                               sandbox: dict[str, Any] | None = None,
                               runtime: str | None = None,
                               upper_dir: str | None = None) -> ContainerInfo:
    """ContainerInfo from a verbose ContainerStatus answer, and the PodSandboxStatus answer of
    its sandbox when known."""
    status = answer.get("status") or {}
    info = verbose_info(answer)
    image, repo, tag, image_id = image_fields(status, info)
    labels = dict(status.get("labels") or {})
    sandbox_status = (sandbox or {}).get("status") or {}
    for key, value in _pod_identity(sandbox_status).items():
        labels.setdefault(key, value)
    return ContainerInfo(
        id=full_id[:12], full_id=full_id,
        name=(status.get("metadata") or {}).get("name") or None,
        image=image, image_repository=repo, image_tag=tag, image_id=image_id,
        privileged=privileged(info), mounts=mounts(status),
        start_ts=_ns(status.get("started_at")) or _ns(status.get("created_at")),
        labels=labels, runtime=runtime, upper_dir=upper_dir,
        pod_labels=dict(sandbox_status.get("labels") or {}) if sandbox_status else None)


def info_from_sandbox_status(full_id: str, answer: dict[str, Any],
                             runtime: str | None = None) -> ContainerInfo:
    """ContainerInfo for a pod sandbox's own (pause) container: named after the pod."""
    status = answer.get("status") or {}
    sandbox_labels = dict(status.get("labels") or {})
    labels = {**sandbox_labels, **_pod_identity(status)}
    return ContainerInfo(
        id=full_id[:12], full_id=full_id, name=(status.get("metadata") or {}).get("name"),
        privileged=privileged(verbose_info(answer)), start_ts=_ns(status.get("created_at")),
        labels=labels, runtime=runtime, pod_labels=sandbox_labels)


def rootfs_mount(full_id: str, info: dict[str, Any]) -> Callable[[str], bool] | None:
    """Where the runtime mounted the container's root file system on the host, from the OCI
    spec's root.path: absolute as it is (cri-o), or relative to a bundle directory named after
    the container (containerd: .../io.containerd.runtime.v2.task/<namespace>/<id>/rootfs)."""
    root = _walk(info, "runtimeSpec", "root", "path")
    if not isinstance(root, str) or not root.strip("/"):
        return None
    if root.startswith("/"):
        return lambda point: point == root
    suffix = f"/{full_id}/{root.strip('/')}"
    return lambda point: point.endswith(suffix)
