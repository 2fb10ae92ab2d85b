"""Which runtime API to ask for a container's metadata: the CRI (containerd, cri-o) for a
container whose cgroup path names a CRI runtime, the Docker-compatible API (docker, podman)
for the others, and the other API when the first has no such container or cannot be asked.

This is the `Lookup` that ContainerRegistry caches and keeps off the event path; the API
clients themselves come from enforcer.adapters (wired in enforcer.agent.build_state).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from enforcer.state.containers import ContainerInfo, Inspect, info_from_inspect
from enforcer.state.cri_metadata import (
    container_pid,
    info_from_container_status,
    info_from_sandbox_status,
    rootfs_mount,
    sandbox_id,
    verbose_info,
)
from enforcer.state.overlay import host_upper_dir, trusted_upper_dir

log = logging.getLogger(__name__)

CRI_RUNTIMES = frozenset({"containerd", "cri-o"})


class RuntimeAbsent(OSError):
    """No socket serves this API on this host (not an error unless no API is there at all)."""


class CriSource(Protocol):
    """What the lookup needs from a CRI client (enforcer.adapters.cri.CriClient)."""

    def container_status(self, container_id: str) -> dict[str, Any] | None: ...
    def pod_sandbox_status(self, sandbox_id: str) -> dict[str, Any] | None: ...


class RuntimeMetadata:
    """A ContainerRegistry Lookup over the Docker API and the CRI.

    `docker` inspects a container (None when unknown; RuntimeAbsent when no socket);
    `cri` gives the CRI client to use now (RuntimeAbsent when no CRI socket).
    """

    def __init__(self, docker: Inspect | None = None,
                 cri: Callable[[], CriSource] | None = None, proc_root: str = "/proc",
                 max_sandboxes: int = 4096):
        self._docker = docker
        self._cri = cri
        self.proc_root = proc_root
        # sandbox id -> PodSandboxStatus answer: a pod's containers share it, and the labels
        # and metadata it carries are fixed when the sandbox is made
        self._sandboxes: dict[str, dict[str, Any]] = {}
        self._max_sandboxes = max_sandboxes

    def __call__(self, full_id: str, runtime: str | None) -> ContainerInfo | None:
        sources = [self._from_docker, self._from_cri]
        if runtime in CRI_RUNTIMES:
            sources.reverse()
        errors: list[str] = []
        absent = 0
        for source in sources:
            try:
                info = source(full_id, runtime)
            except RuntimeAbsent:
                absent += 1
                continue
            except OSError as exc:
                errors.append(str(exc))
                continue
            if info is not None:
                return info
        if absent == len(sources):
            raise RuntimeAbsent("no container runtime socket found (Docker API or CRI)")
        if errors:
            raise OSError("; ".join(errors))
        return None

    def _from_docker(self, full_id: str, runtime: str | None) -> ContainerInfo | None:
        if self._docker is None:
            raise RuntimeAbsent("no Docker API")
        doc = self._docker(full_id)
        return None if doc is None else info_from_inspect(full_id, doc, runtime)

    def _from_cri(self, full_id: str, runtime: str | None) -> ContainerInfo | None:
        if self._cri is None:
            raise RuntimeAbsent("no CRI")
        client = self._cri()
        answer = client.container_status(full_id)
        if answer is None:
            # not a container: perhaps a pod's sandbox (pause) container
            sandbox = self._sandbox(client, full_id)
            return None if sandbox is None else info_from_sandbox_status(full_id, sandbox,
                                                                         runtime)
        sid = sandbox_id(answer)
        complete = True
        try:
            sandbox = self._sandbox(client, sid) if sid else None
        except OSError as exc:  # the container's own answer is still worth having now
            log.debug("pod sandbox %s: CRI lookup failed: %s", sid, exc)
            sandbox, complete = None, False
        info = info_from_container_status(full_id, answer, sandbox, runtime,
                                          self._upper_dir(full_id, answer))
        return info if complete else replace(info, complete=False)

    def _sandbox(self, client: CriSource, sid: str) -> dict[str, Any] | None:
        found = self._sandboxes.get(sid)
        if found is None:
            found = client.pod_sandbox_status(sid)
            if found is not None:
                if len(self._sandboxes) >= self._max_sandboxes:
                    self._sandboxes.clear()
                self._sandboxes[sid] = found
        return found

    def _upper_dir(self, full_id: str, answer: dict[str, Any]) -> str | None:
        # the host's mount of the container's root file system (there before the container's
        # first process starts, when the first lookup usually happens), else the host mount
        # that is its first process's root; failing both, the registry finds it later from a
        # process of the container (ContainerRegistry.upper_dir). Never the upperdir= the
        # process's own mount table shows: the process may have written it.
        at = rootfs_mount(full_id, verbose_info(answer))
        found = host_upper_dir(at, self.proc_root) if at is not None else None
        pid = container_pid(answer)
        if found is None and pid is not None:
            found = trusted_upper_dir(pid, self.proc_root)
        return found
