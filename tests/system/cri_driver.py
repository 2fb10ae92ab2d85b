"""A minimal kubelet for the tests: drives a real CRI runtime over gRPC (run a pod sandbox in
the host's network namespace so no CNI is needed, create and start containers in it, tear
them down), labelling sandboxes and containers the way the kubelet does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory

from enforcer.adapters import cri_descriptor
from tests.system import cri_driver_descriptor

SERVICE = "runtime.v1.RuntimeService"
NODE = 2  # NamespaceMode.NODE: share the host's namespace
CONTAINER = 1  # NamespaceMode.CONTAINER

_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(cri_descriptor.SERIALIZED)
_POOL.AddSerializedFile(cri_driver_descriptor.SERIALIZED)


def _msg(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"runtime.v1.{name}"))


@dataclass
class Pod:
    """A running pod sandbox and the config it was made with (CreateContainer wants it)."""

    id: str
    name: str
    namespace: str
    uid: str
    config: Any
    containers: list[str] = field(default_factory=list)


def _remove_cgroup(path: str) -> None:
    """Remove the pod's (empty) cgroup in every hierarchy, as the kubelet does: the runtime
    made it as the parent of the pod's containers and leaves it."""
    root = Path("/sys/fs/cgroup")
    for hierarchy in [root, *(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        try:
            (hierarchy / path.lstrip("/")).rmdir()
        except OSError:
            pass


class CriDriver:
    """RunPodSandbox / CreateContainer / StartContainer and their undoing, on one socket."""

    def __init__(self, socket_path: str, timeout: float = 60.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.pods: list[Pod] = []

    def _call(self, method: str, request: Any) -> Any:
        reply = _msg(method + "Response")
        call = self._channel.unary_unary(f"/{SERVICE}/{method}",
                                         request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=reply.FromString)
        return call(request, timeout=self.timeout)

    def run_pod(self, name: str, namespace: str, labels: dict[str, str] | None = None,
                cgroup_parent: str | None = None, privileged: bool = False) -> Pod:
        """A pod sandbox in the host network namespace, labelled as the kubelet labels it,
        under a kubelet-style cgroup parent (cgroupfs driver: /kubepods/besteffort/pod<uid>)."""
        uid = str(uuid.uuid4())
        config = _msg("PodSandboxConfig")()
        config.metadata.name, config.metadata.namespace, config.metadata.uid = name, namespace, uid
        config.labels.update(labels or {})
        config.labels.update({"io.kubernetes.pod.name": name,
                              "io.kubernetes.pod.namespace": namespace,
                              "io.kubernetes.pod.uid": uid})
        config.linux.cgroup_parent = cgroup_parent or f"/kubepods/besteffort/pod{uid}"
        config.linux.security_context.namespace_options.network = NODE
        config.linux.security_context.namespace_options.pid = CONTAINER
        config.linux.security_context.privileged = privileged  # a privileged container needs it
        req = _msg("RunPodSandboxRequest")(config=config)
        pod = Pod(self._call("RunPodSandbox", req).pod_sandbox_id, name, namespace, uid, config)
        self.pods.append(pod)
        return pod

    def start_container(self, pod: Pod, name: str, image: str, command: list[str],
                        mounts: list[tuple[str, str, bool]] = (),  # type: ignore[assignment]
                        privileged: bool = False) -> str:
        """Create and start a container in `pod`; returns its full id. mounts are
        (host_path, container_path, readonly)."""
        config = _msg("ContainerConfig")()
        config.metadata.name = name
        config.image.image = image
        config.command.extend(command)
        config.labels.update({"io.kubernetes.pod.name": pod.name,
                              "io.kubernetes.pod.namespace": pod.namespace,
                              "io.kubernetes.pod.uid": pod.uid,
                              "io.kubernetes.container.name": name})
        for host, dest, readonly in mounts:
            config.mounts.add(host_path=host, container_path=dest, readonly=readonly)
        config.linux.security_context.privileged = privileged
        config.linux.security_context.namespace_options.network = NODE
        config.linux.security_context.namespace_options.pid = CONTAINER
        req = _msg("CreateContainerRequest")(pod_sandbox_id=pod.id, config=config,
                                             sandbox_config=pod.config)
        cid = self._call("CreateContainer", req).container_id
        pod.containers.append(cid)
        self._call("StartContainer", _msg("StartContainerRequest")(container_id=cid))
        return cid

    def remove_pod(self, pod: Pod) -> None:
        """Stop and remove the pod's containers, then the pod (as the kubelet does)."""
        for cid in pod.containers:
            self._call("StopContainer", _msg("StopContainerRequest")(container_id=cid))
            self._call("RemoveContainer", _msg("RemoveContainerRequest")(container_id=cid))
        self._call("StopPodSandbox", _msg("StopPodSandboxRequest")(pod_sandbox_id=pod.id))
        self._call("RemovePodSandbox", _msg("RemovePodSandboxRequest")(pod_sandbox_id=pod.id))
        self.pods.remove(pod)
        _remove_cgroup(pod.config.linux.cgroup_parent)

    def close(self) -> None:
        for pod in list(self.pods):
            try:
                self.remove_pod(pod)
            except grpc.RpcError:
                pass
        self._channel.close()
