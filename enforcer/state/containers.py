"""Container and pod metadata, looked up from the runtime's API and cached.

Lookups never run on the event path. The runtime's event stream announces each container
as it is created, so its metadata is usually in the cache before its first process runs;
an id seen before that (or with no stream) is looked up in the background at once, with
retries. Meanwhile its events get a `pending` bare info, and the agent sets them aside
until the metadata is in or a short hold has passed (see Agent), so that the alerts of a
container that lives for milliseconds still carry its name, image and pod.

Where the answer comes from is the registry's `Lookup`: the Docker-compatible API (docker,
podman) and the CRI (containerd, cri-o), see enforcer.state.runtime_metadata; a plain
Docker-API `inspect` is wrapped into one (docker_lookup).
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
from enforcer.state.overlay import root_mount_upper

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
    pending: bool = False  # a bare id whose metadata is being looked up
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


_MAX_UNDESCRIBED = 4096
RETRY_ROUND_PAUSE = 30.0  # seconds between lookup rounds for a container nobody describes (fully)


class ContainerRegistry:
    """Cache of ContainerInfo by full id, filled from the runtime API off the event path:
    ahead of time when the runtime's event stream says a container was created or started
    (enforcer/state/container_watch.py), else on the first sight of an id. The event path
    never waits for the runtime: until the metadata is in, get() answers a bare info that
    is `pending` for at most `hold` seconds after the first sight (the agent sets aside the
    events that need it for that long), then plain bare while background retries go on.

    The runtime is asked through `lookup` (enforcer.state.runtime_metadata.RuntimeMetadata
    in the agent), or, given only a Docker-API `inspect`, through docker_lookup(inspect). An
    answer that is not `complete` (a CRI container whose pod sandbox could not be asked) is
    used at once and completed in the background.
    """

    def __init__(self, inspect: Inspect | None, hold: float = 2.0,
                 retry_delays: tuple[float, ...] = (0.0, 0.2, 0.5, 1, 2, 5, 10),
                 clock: Callable[[], float] = time.monotonic, lookup: Lookup | None = None):
        self._lookup_fn = lookup or (docker_lookup(inspect) if inspect is not None else None)
        self._cache: dict[str, ContainerInfo] = {}
        self._first_seen: dict[str, float] = {}  # ids asked for and not (yet) known
        self._unknown: set[str] = set()  # the runtime said no such container
        self._busy: set[str] = set()  # ids with a background lookup running
        self._quiet_until: dict[str, float] = {}  # no new lookup round before then
        self._lock = threading.Lock()
        self._retry_delays = retry_delays
        self._clock = clock
        self.hold = hold
        self.watched = False  # set while a watcher follows the runtime's event stream
        self.lookups = 0
        self.failures = 0
        self._no_upper: set[str] = set()  # ids whose root is not an overlay mount
        # how many descriptions were stored: the in-kernel kill arms again the processes
        # that waited for their container's metadata when it changes
        self.described = 0

    def peek(self, full_id: str) -> ContainerInfo | None:
        """What is known of the container now, without asking the runtime nor counting a
        sighting (the set-aside hold starts at the first event that needs it, not here)."""
        with self._lock:
            return self._cache.get(full_id)

    def get(self, full_id: str, runtime: str | None = None) -> ContainerInfo:
        """Metadata for this container: cached, or the bare id (a lookup runs meanwhile)."""
        if not full_id:
            return HOST_INFO
        info = self._cache.get(full_id)
        if info is not None:
            if info.runtime is None and runtime is not None:  # filled from an event
                info = self._cache[full_id] = replace(info, runtime=runtime)
            if not info.complete:
                with self._lock:
                    start = self._may_start(full_id, self._clock())
                if start:
                    self._spawn(full_id, runtime)
            return info
        now = self._clock()
        with self._lock:
            if len(self._first_seen) >= _MAX_UNDESCRIBED and full_id not in self._first_seen:
                self._forget_old(now)
            first = self._first_seen.setdefault(full_id, now)
            start = self._may_start(full_id, now)
        if start:
            self._spawn(full_id, runtime)
        return ContainerInfo(id=full_id[:12], full_id=full_id, runtime=runtime,
                             pending=self._may_arrive(full_id, first, now))

    def _may_start(self, full_id: str, now: float) -> bool:
        # under self._lock: one background round per id at a time, none in its quiet time
        if full_id in self._busy or now < self._quiet_until.get(full_id, 0.0):
            return False
        self._busy.add(full_id)
        return True

    def _forget_old(self, now: float) -> None:
        # ids the runtime never described, long past their hold: mostly exited containers
        old = [k for k, t in self._first_seen.items() if now - t >= self.hold]
        for k in old:
            del self._first_seen[k]
            self._unknown.discard(k)
            self._quiet_until.pop(k, None)

    def pending(self, full_id: str) -> bool:
        """Whether the metadata of this container may still arrive within the hold."""
        if not full_id or full_id in self._cache:
            return False
        first = self._first_seen.get(full_id)
        return first is not None and self._may_arrive(full_id, first, self._clock())

    def _may_arrive(self, full_id: str, first: float, now: float) -> bool:
        # A container the runtime no longer knows may still be described by its create
        # event, which a runtime's event stream can deliver a few hundred ms late.
        return (self._lookup_fn is not None and now - first < self.hold
                and (full_id not in self._unknown or self.watched))

    def prefetch(self, full_id: str, attributes: dict[str, str] | None = None,
                 refresh: bool = False) -> ContainerInfo | None:
        """Look a container up now (the caller is a background thread: the runtime just
        said it was created or started). When the runtime no longer knows it (a `--rm`
        container that is already gone), the event's own attributes (name, image, labels)
        stand in. `refresh` re-reads a container already cached (its start time), as does
        an answer that was not complete."""
        cached = self._cache.get(full_id)
        if not full_id or (not refresh and cached is not None and cached.complete):
            return cached
        found = self._lookup(full_id, None)
        if found is not None or not attributes:
            return found
        if full_id in self._cache:
            return self._cache[full_id]
        return self._store(full_id, info_from_event(full_id, attributes))

    def _spawn(self, full_id: str, runtime: str | None) -> None:
        threading.Thread(target=self._retry, args=(full_id, runtime), daemon=True,
                         name=f"container-lookup-{full_id[:12]}").start()

    def upper_dir(self, info: ContainerInfo, pids: Iterable[int], proc_root: str = "/proc"
                  ) -> str | None:
        """The container's overlayfs upper layer: as the runtime said, else that of the host
        overlay mount that is the root of the first of `pids` (processes of this container,
        after their exec) still alive, then kept with its metadata so it is found once.

        A process whose root is no host mount (one it mounted itself, then chrooted into)
        tells nothing: the next pid is tried, and nothing is remembered, so that a forged root
        can neither name the layer nor hide the real one. A root that is a host mount but no
        overlay is remembered as such."""
        if info.upper_dir or not info.full_id or info.full_id in self._no_upper:
            return info.upper_dir
        for pid in pids:
            host_mount, found = root_mount_upper(pid, proc_root)
            if not host_mount:
                continue
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
            info = self._lookup_fn(full_id, runtime or self._runtime_of(full_id))
        except OSError as exc:
            self.failures += 1
            log.debug("container %s: runtime lookup failed: %s", full_id[:12], exc)
            return None
        if info is None:
            with self._lock:
                self._unknown.add(full_id)
            return None
        return self._store(full_id, info)

    def _runtime_of(self, full_id: str) -> str | None:
        cached = self._cache.get(full_id)
        return cached.runtime if cached is not None else None

    def _store(self, full_id: str, info: ContainerInfo) -> ContainerInfo:
        old = self._cache.get(full_id)
        if old is not None and old.upper_dir and not info.upper_dir:
            info = replace(info, upper_dir=old.upper_dir)  # read since from a process's mount
        self._cache[full_id] = info
        self.described += 1
        with self._lock:
            self._first_seen.pop(full_id, None)
            self._unknown.discard(full_id)
            self._quiet_until.pop(full_id, None)
        return info

    def _retry(self, full_id: str, runtime: str | None) -> None:
        try:
            for delay in self._retry_delays:
                if delay:
                    time.sleep(delay)
                cached = self._cache.get(full_id)
                if cached is not None and cached.complete:
                    return
                found = self._lookup(full_id, runtime)
                if found is not None and found.complete:
                    return
                if found is None and full_id in self._unknown:
                    return  # not this runtime's container: no point asking again soon
        finally:
            with self._lock:
                self._busy.discard(full_id)
                cached = self._cache.get(full_id)
                if cached is None or not cached.complete:
                    # a later event asks again, not every one
                    self._quiet_until[full_id] = self._clock() + RETRY_ROUND_PAUSE


def info_from_event(full_id: str, attributes: dict[str, str]) -> ContainerInfo:
    """What a container event says of its container: name, image and labels (docker and
    podman list the labels among the attributes, next to `name` and `image`)."""
    image = attributes.get("image") or None
    repo, tag = split_image(image) if image else (None, None)
    labels = {k: v for k, v in attributes.items()
              if k not in _EVENT_OWN_ATTRIBUTES and isinstance(v, str)}
    return ContainerInfo(id=full_id[:12], full_id=full_id, name=attributes.get("name") or None,
                         image=image, image_repository=repo, image_tag=tag, labels=labels)


_EVENT_OWN_ATTRIBUTES = frozenset({"name", "image", "containerExitCode", "podId", "exitCode",
                                   "signal"})


HOST_INFO = ContainerInfo(id=HOST, full_id="", name=HOST)
