"""Container identity from a process's cgroup paths (pure).

Recognised runtimes: docker (`/docker/<id>`, `docker-<id>.scope`), containerd/CRI
(`cri-containerd-<id>.scope`, `/kubepods/.../<id>`), cri-o (`crio-<id>.scope`), podman
(`libpod-<id>`, `libpod-<id>.scope`). Anything else — including the memory cgroup
`/process_api/<hex>` some tooling puts processes in — is the host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HOST = "host"

_SCOPED = re.compile(r"^(docker|cri-containerd|crio|libpod)-([0-9a-f]{64})(?:\.scope)?$")
_BARE = re.compile(r"^[0-9a-f]{64}$")
_POD_UID = re.compile(r"^(?:kubepods-[a-z]+-)?pod([0-9a-f_-]{36})(?:\.slice)?$")
# parents under which a bare 64-hex directory is a container (cgroupfs drivers)
_BARE_PARENTS = ("docker", "kubepods", "libpod_parent", "containerd", "default", "crio",
                 "actions_job", "ecs")


@dataclass(frozen=True)
class CgroupIdentity:
    """What a cgroup path says: runtime and full container id, and a pod uid if present."""

    runtime: str  # docker, containerd, cri-o, podman, or "host"
    full_id: str  # 64 hex, or "" for the host
    pod_uid: str | None = None

    @property
    def container_id(self) -> str:
        """The 12-character id Falco prints, or `host`."""
        return self.full_id[:12] if self.full_id else HOST


_RUNTIME = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o",
            "libpod": "podman"}

HOST_IDENTITY = CgroupIdentity(HOST, "")


def identify(cgroup_text: str) -> CgroupIdentity:
    """Parse /proc/PID/cgroup text (v1 or v2) into the container it names, if any."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        found = _from_path(path)
        if found is not None:
            return found
    return HOST_IDENTITY


def _from_path(path: str) -> CgroupIdentity | None:
    parts = [p for p in path.split("/") if p]
    pod_uid = None
    for i, part in enumerate(parts):
        m = _POD_UID.match(part)
        if m:
            pod_uid = m.group(1).replace("_", "-")
            continue
        m = _SCOPED.match(part)
        if m:
            if part.startswith("libpod-conmon") or part.startswith("crio-conmon"):
                continue
            return CgroupIdentity(_RUNTIME[m.group(1)], m.group(2), pod_uid)
        if _BARE.match(part) and i > 0:
            parent_names = " ".join(parts[:i])
            if any(p in parent_names for p in _BARE_PARENTS):
                runtime = ("docker" if "docker" in parent_names
                           else "podman" if "libpod" in parent_names else "containerd")
                return CgroupIdentity(runtime, part, pod_uid)
    return None
