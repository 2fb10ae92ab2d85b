"""Container and pod metadata, looked up from the runtime's API and cached.

Where the answer comes from is the caller's choice (`Lookup`): the Docker-compatible API
(docker, podman) or the CRI (containerd, cri-o), see enforcer.state.runtime_metadata.

On the first sight of a container id the lookup is made at once with a short timeout, so
the first event of a new container (often the one that matters: its entrypoint) already
carries its name, image and pod. When that fails, a background thread retries with backoff
and the event path never waits again for that id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from enforcer.state.cgroups import HOST
from enforcer.state.overlay import upper_dir_of

log = logging.getLogger(__name__)

Inspect = Callable[[str], "dict[str, Any] | None"]
# (full id, runtime named by the cgroup path) -> metadata, or None when the runtime does not
# know the container; raises OSError when it cannot be asked
Lookup = Callable[[str, "str | None"], "ContainerInfo | None"]

K8S_POD_NAME = "io.kubernetes.pod.name"
K8S_NAMESPACE = "io.kubernetes.pod.namespace"
K8S_POD_UID = "io.kubernetes.pod.uid"


@dataclass(frozen=True)
class ContainerInfo:
    """Falco's container.* and k8s.* fields for one container."""

    id: str  # 12 chars
    full_id: str
    name: str | None = None
    image: str | None = None
    image_repository: str | None = None
    image_tag: str | None = None
    image_id: str | None = None
    privileged: bool | None = None
    mounts: tuple[dict[str, Any], ...] = ()
    start_ts: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    runtime: str | None = None
    upper_dir: str | None = None  # overlayfs upper layer on the host, when the runtime says
    # the pod sandbox's own labels (CRI), which Falco's k8s.pod.labels shows; None when the
    # runtime gives only the container's labels (Docker API)
    pod_labels: dict[str, str] | None = None
    # False when part of the answer could not be had (e.g. the CRI answered for the container
    # but not for its pod sandbox): used as it is, and asked again in the background
    complete: bool = True

    @property
    def k8s_pod_name(self) -> str | None:
        return self.labels.get(K8S_POD_NAME)

    @property
    def k8s_ns_name(self) -> str | None:
        return self.labels.get(K8S_NAMESPACE)

    @property
    def k8s_pod_uid(self) -> str | None:
        return self.labels.get(K8S_POD_UID)

    @property
    def k8s_pod_labels(self) -> dict[str, str]:
        """The pod's labels (the sandbox's when known, else the container's), other than the
        kubelet's own bookkeeping."""
        labels = self.labels if self.pod_labels is None else self.pod_labels
        return {k: v for k, v in labels.items()
                if not k.startswith(("io.kubernetes.", "annotation.io.kubernetes."))}


def split_image(image: str) -> tuple[str, str | None]:
    """`repo[:tag][@digest]` -> (repo, tag); a port in the registry host is not a tag."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, ("latest" if "@" not in image else None)


def _parse_ts(text: str | None) -> int | None:
    if not text or text.startswith("0001-"):
        return None
    try:
        main, _, frac = text.rstrip("Z").partition(".")
        tz = ""
        for sep in ("+", "-"):
            if sep in frac:
                frac, _, off = frac.partition(sep)
                tz = sep + off
        dt = datetime.fromisoformat(main + (tz or "+00:00"))
        nanos = int((frac or "0")[:9].ljust(9, "0"))
        return int(dt.timestamp()) * 1_000_000_000 + nanos
    except ValueError:
        return None


def info_from_inspect(full_id: str, doc: dict[str, Any], runtime: str | None = None
                      ) -> ContainerInfo:
    """Build ContainerInfo from a Docker-API `/containers/{id}/json` answer."""
    config = doc.get("Config") or {}
    host = doc.get("HostConfig") or {}
    image = config.get("Image") or doc.get("ImageName") or doc.get("Image") or None
    repo, tag = split_image(image) if image else (None, None)
    labels = dict(config.get("Labels") or {})
    mounts = tuple(
        {"source": m.get("Source", ""), "dest": m.get("Destination", ""),
         "mode": m.get("Mode", ""), "rw": bool(m.get("RW", True)),
         "propagation": m.get("Propagation", "")}
        for m in (doc.get("Mounts") or []))
    return ContainerInfo(
        id=full_id[:12], full_id=full_id, name=(doc.get("Name") or "").lstrip("/") or None,
        image=image, image_repository=repo, image_tag=tag, image_id=doc.get("Image"),
        privileged=bool(host.get("Privileged", False)), mounts=mounts,
        start_ts=_parse_ts((doc.get("State") or {}).get("StartedAt")), labels=labels,
        runtime=runtime,
        upper_dir=((doc.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir"))


def docker_lookup(inspect: Inspect) -> Lookup:
    """A Lookup over a Docker-API `/containers/{id}/json` call."""
    def lookup(full_id: str, runtime: str | None) -> ContainerInfo | None:
        doc = inspect(full_id)
        return None if doc is None else info_from_inspect(full_id, doc, runtime)
    return lookup


class ContainerRegistry:
    """Cache of ContainerInfo by full id, filled from the runtime API: `inspect` (a Docker
    API call) or, in its place, any `lookup`."""

    def __init__(self, inspect: Inspect | None, first_timeout: float = 0.5,
                 retry_delays: tuple[float, ...] = (0.2, 0.5, 1, 2, 5, 10),
                 lookup: Lookup | None = None):
        self._lookup_fn = lookup or (docker_lookup(inspect) if inspect is not None else None)
        self._cache: dict[str, ContainerInfo] = {}
        self._pending: set[str] = set()
        self._failed: set[str] = set()  # ids whose first lookup failed: never block again
        self._lock = threading.Lock()
        self._retry_delays = retry_delays
        self.first_timeout = first_timeout
        self.lookups = 0
        self.failures = 0
        self._no_upper: set[str] = set()  # ids whose root is not an overlay mount

    def get(self, full_id: str, runtime: str | None = None) -> ContainerInfo:
        """Metadata for this container: cached, looked up now on first sight, or (when the
        runtime did not answer) the bare id while a background retry runs."""
        if not full_id:
            return HOST_INFO
        info = self._cache.get(full_id)
        if info is not None:
            return info
        with self._lock:
            if full_id in self._pending:
                return ContainerInfo(id=full_id[:12], full_id=full_id, runtime=runtime)
            self._pending.add(full_id)
            retried = full_id in self._failed
        found = None if retried else self._lookup(full_id, runtime)
        if found is not None:
            if not found.complete:
                threading.Thread(target=self._retry, args=(full_id, runtime), daemon=True,
                                 name=f"container-lookup-{full_id[:12]}").start()
            return found
        self._failed.add(full_id)
        threading.Thread(target=self._retry, args=(full_id, runtime), daemon=True,
                         name=f"container-lookup-{full_id[:12]}").start()
        return ContainerInfo(id=full_id[:12], full_id=full_id, runtime=runtime)

    def upper_dir(self, info: ContainerInfo, pids: Iterable[int], proc_root: str = "/proc"
                  ) -> str | None:
        """The container's overlayfs upper layer: as the runtime said, else read from the
        root mount of the first of `pids` (processes of this container, after their exec)
        that can be read, then kept with its metadata so it is read once."""
        if info.upper_dir or not info.full_id or info.full_id in self._no_upper:
            return info.upper_dir
        for pid in pids:
            readable, found = upper_dir_of(pid, proc_root)
            if not readable:
                continue  # gone already: try the next
            if found is None:
                self._no_upper.add(info.full_id)
                return None
            cached = self._cache.get(info.full_id)
            if cached is not None:
                self._cache[info.full_id] = replace(cached, upper_dir=found)
            return found
        return None

    def _lookup(self, full_id: str, runtime: str | None) -> ContainerInfo | None:
        if self._lookup_fn is None:
            return None
        self.lookups += 1
        try:
            info = self._lookup_fn(full_id, runtime)
        except OSError as exc:
            self.failures += 1
            log.debug("container %s: runtime lookup failed: %s", full_id[:12], exc)
            return None
        if info is None:
            return None
        self._cache[full_id] = info
        with self._lock:
            self._pending.discard(full_id)
        return info

    def _retry(self, full_id: str, runtime: str | None) -> None:
        for delay in self._retry_delays:
            time.sleep(delay)
            found = self._lookup(full_id, runtime)
            if found is not None and found.complete:
                return
        with self._lock:
            self._pending.discard(full_id)  # give up for now; a later event asks again


HOST_INFO = ContainerInfo(id=HOST, full_id="", name=HOST)
