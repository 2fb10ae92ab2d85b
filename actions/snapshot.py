"""snapshot — before anything else, keep the evidence: a tar.gz of the container's changed
files (its overlay upper directory) and/or of listed paths under /proc/PID/root, with a
manifest.json holding the sha256 of every file, the event, the process tree and the
process's open files and sockets. Bounded in size; written to a local directory.

RBAC: none (node-local; the agent needs hostPID and read access to container storage).

Paths inside the container are opened one component at a time without following symlinks,
so a hostile container cannot point the agent at the host's files.

With `upload`, once the archive is written and its sha256 known, the archive and its
manifest are PUT to S3-compatible storage (see actions/snapshot_upload.py) under a key made of
the node, container id, date, rule and pid. Credentials come from the agent's environment,
IRSA or a mounted credentials file, never from the policy.

The upload runs in the background (a FollowUp the responder runs on its follow-up thread):
the snapshot action is done once the archive is on local disk (`detail.upload.status:
pending`), so a kill after it runs at once, even when the storage endpoint is slow or dead.
The upload's outcome is audited as its own `snapshot.upload` action record (and span), with
the local path: a transient error is retried within the responder's bounds (the archive is
not taken again); an upload that still fails keeps the local archive and is audited as
`failed` with `detail.upload.status: failed`, distinct from a snapshot that could not be
taken (a failed `snapshot` record, no upload record).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.base import (
    DONE,
    DRY_RUN,
    Action,
    AlreadyDone,
    FollowUp,
    Outcome,
    Params,
    Plan,
    param,
)
from actions.context import ActionContext
from actions.process import (
    ProcessHandle,
    ancestors,
    read_stat,
)
from actions.snapshot_upload import (
    UploadParams,
    key_component,
    manifest_key,
    object_key,
    parse_upload,
)
from actions.target_process import pinned_process
from enforcer.errors import ActionError, PermanentActionError, TemporaryActionError
from enforcer.units import parse_size


def _abs_paths(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of absolute paths, got {value!r}")
    for path in value:
        if not path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"{path!r} must be absolute and must not contain '..'")
    return tuple(value)


@dataclass(frozen=True)
class SnapshotParams(Params):
    paths: tuple[str, ...] = param((), parse=_abs_paths,
                                   doc="paths inside the container (or the process's root)")
    changed: bool = param(True, doc="include the container's changed files (overlay upper "
                                    "directory), when its root is an overlay")
    max_bytes: int = param(50 * 1024**2, parse=parse_size,
                           schema={"type": ["string", "integer"]},
                           doc="total bytes of file content kept (e.g. 50Mi)")
    max_files: int = param(10_000, doc="files kept at most")
    directory: str | None = param(None, doc="where tarballs are written "
                                            "(default /var/lib/enforcer/snapshots)")
    upload: UploadParams | None = param(None, parse=parse_upload,
                                        schema={"anyOf": [UploadParams.json_schema(),
                                                          {"type": "null"}]},
                                        doc="also upload the archive and its manifest to "
                                            "S3-compatible storage")


class UploadFailed(ActionError):
    """The snapshot was written but its upload failed: `detail` carries the local archive and
    the upload's target and error, for the audit record."""

    def __init__(self, message: str, detail: dict[str, Any], delay: float | None = None):
        super().__init__(message)
        self.detail = detail
        self.delay = delay


class UploadRetry(UploadFailed, TemporaryActionError):
    """A transient upload failure: the responder retries the upload (not the snapshot)."""


class Snapshot(Action):
    name = "snapshot"
    params_type = SnapshotParams
    required_fields = ("proc.pid",)
    target_fields = ("proc.pid", "proc.start_ticks", "proc.pid.ts", "container.id")
    mutating = False
    example = ("- snapshot: {paths: [/tmp, /root], max_bytes: 50Mi, "
               "upload: {url: s3://evidence/enforcer, endpoint: https://minio.local:9000}}")
    params: SnapshotParams

    def __init__(self, params: Params):
        super().__init__(params)
        self._store: Any = None

    def plan(self, context: ActionContext) -> Plan:
        pid = int(context.field("proc.pid"))
        handle, owned = pinned_process(context, pid)
        upper = _overlay_upper(pid) if self.params.changed else None
        if not self.params.paths and upper is None:
            if owned:
                handle.close()
            raise PermanentActionError(
                f"nothing to snapshot for pid {pid}: its root is not an overlay (no changed "
                "files to take) and the policy lists no paths")
        directory = Path(self.params.directory or context.snapshot_dir)
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        # the container id is event data: only a plain name may become part of a file name
        container = key_component(context.field("container.id"), "host")[:12]
        dest = directory / f"{stamp}-{container}-{pid}-{handle.start_ticks}.tar.gz"
        sources = [{"kind": "changed", "path": upper}] if upper else []
        sources += [{"kind": "path", "path": p} for p in self.params.paths]
        render: dict[str, Any] = {"destination": str(dest), "sources": sources,
                                  "max_bytes": self.params.max_bytes,
                                  "max_files": self.params.max_files}
        summary = f"snapshot pid {pid} to {dest}"
        upload = self.params.upload
        labels: dict[str, str] = {}
        if upload is not None:
            node = key_component(context.node_name or socket.gethostname(), "unknown-node")
            labels = {"node": node, "pid": str(pid),
                           "container": key_component(context.field("container.id"), "host")}
            key = object_key(upload, node=node, container=context.field("container.id"),
                             rule=str(getattr(context.alert, "rule", "") or ""), when=now,
                             pid=pid, start_ticks=handle.start_ticks)
            render["upload"] = {"endpoint": upload.endpoint or "AWS", "bucket": upload.bucket,
                                "key": key, "manifest_key": manifest_key(key),
                                "region": upload.region, "checksum": upload.checksum}
            summary += f" and upload it to s3://{upload.bucket}/{key}"
        return Plan(action=self.name,
                    target={"pid": pid, "start_ticks": handle.start_ticks,
                            "container.id": context.field("container.id")},
                    render=render,
                    summary=summary,
                    private={"handle": handle, "owned": owned, "alert": context.alert,
                             "labels": labels,
                             "dest": dest, "upper": upper})

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        written = self._take(plan, dry_run)
        if dry_run or self.params.upload is None:
            return written
        target = plan.render["upload"]
        return Outcome(DONE, f"{written.message}; uploading it to "
                             f"s3://{target['bucket']}/{target['key']} in the background",
                       dict(written.detail, upload={"status": "pending"} | target),
                       follow_up=FollowUp("upload", lambda: self._upload(plan, written)))

    def _take(self, plan: Plan, dry_run: bool) -> Outcome:
        handle: ProcessHandle = plan.private["handle"]
        if not handle.alive():
            raise AlreadyDone(f"process {handle.pid} exited before the snapshot")
        collector = _Collector(self.params.max_bytes, self.params.max_files, keep=not dry_run)
        root_fd = os.open(f"/proc/{handle.pid}/root", os.O_RDONLY | os.O_DIRECTORY)
        try:
            if not handle.alive():  # the root fd must be the pinned process's
                raise AlreadyDone(f"process {handle.pid} exited before the snapshot")
            if plan.private["upper"]:
                collector.add_tree(plan.private["upper"], None, "changed", shown_as="/")
            for path in self.params.paths:
                collector.add_tree(path, root_fd, "rootfs")
        finally:
            os.close(root_fd)
        if dry_run:
            upload = plan.render.get("upload")
            also = (f", then upload it to s3://{upload['bucket']}/{upload['key']} at "
                    f"{upload['endpoint']}" if upload else "")
            detail = {"files": len(collector.files), "bytes": collector.total,
                      "truncated": collector.truncated}
            if upload:
                detail["upload"] = {"status": DRY_RUN} | upload
            return Outcome(DRY_RUN, f"would write {len(collector.files)} files "
                                    f"({collector.total} bytes) to "
                                    f"{plan.render['destination']}{also}", detail)
        manifest = _manifest(plan, handle, collector)
        dest: Path = plan.private["dest"]
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = dest.with_suffix(".partial")
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        with open(temp, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb") as gz, \
                    tarfile.open(fileobj=gz, mode="w") as tar:
                _add_bytes(tar, "manifest.json", body, 0o600)
                for entry, data in collector.files:
                    _add_bytes(tar, entry["archive"], data, entry["mode"] & 0o777)
        os.replace(temp, dest)
        plan.private["manifest"] = body
        return Outcome(DONE, f"wrote {len(collector.files)} files ({collector.total} bytes) "
                             f"to {dest}",
                       {"path": str(dest), "files": len(collector.files),
                        "bytes": collector.total, "truncated": collector.truncated,
                        "sha256": _file_sha256(dest), "size": dest.stat().st_size})

    def _upload(self, plan: Plan, written: Outcome) -> Outcome:
        """PUT the written archive, then its manifest (the follow-up of `apply`). Errors keep
        the local archive and say so; transient ones are retried by the responder."""
        from enforcer.adapters.s3 import ObjectStore  # boto3 only when a policy uploads

        upload = self.params.upload
        assert upload is not None
        target = plan.render["upload"]
        if self._store is None:
            self._store = ObjectStore(endpoint=upload.endpoint, region=upload.region,
                                      credentials_file=upload.credentials_file,
                                      profile=upload.profile, timeout=upload.timeout,
                                      checksum=upload.checksum)
        local = written.detail
        meta = {"sha256": local["sha256"]} | plan.private["labels"]
        try:
            archive = self._store.put(target["bucket"], target["key"], Path(local["path"]),
                                      local["sha256"], "application/gzip", meta)
            body = plan.private["manifest"]
            stored_manifest = self._store.put(
                target["bucket"], target["manifest_key"], body,
                hashlib.sha256(body).hexdigest(), "application/json", meta)
        except ActionError as exc:
            detail = dict(local, upload={"status": "failed", "error": str(exc)} | target)
            message = (f"snapshot written to {local['path']} but its upload failed: {exc}")
            if exc.temporary:
                raise UploadRetry(message, detail, getattr(exc, "delay", None)) from exc
            raise UploadFailed(message, detail) from exc
        done = archive.as_dict() | {"status": DONE, "endpoint": target["endpoint"],
                                     "manifest": stored_manifest.as_dict()}
        return Outcome(DONE, f"{written.message} and uploaded it to "
                             f"s3://{archive.bucket}/{archive.key}",
                       dict(local, upload=done))

    def release(self, plan: Plan) -> None:
        if plan.private.get("owned"):
            plan.private["handle"].close()


class _Collector:
    def __init__(self, max_bytes: int, max_files: int, keep: bool):
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.keep = keep
        self.total = 0
        self.files: list[tuple[dict[str, Any], bytes]] = []
        self.skipped: list[dict[str, str]] = []
        self.truncated = False

    def add_tree(self, path: str, root_fd: int | None, prefix: str,
                 shown_as: str | None = None) -> None:
        """Add the file or tree at `path` (below `root_fd`, or a host path when None);
        entries are named `shown_as` + their path below `path` (default: `path`)."""
        shown = shown_as if shown_as is not None else path
        try:
            top = _open_beneath(root_fd, path)
        except OSError as exc:
            self.skipped.append({"path": path, "reason": exc.strerror or str(exc)})
            return
        try:
            info = os.fstat(top)
            if stat.S_ISREG(info.st_mode):
                self._add_file(top, shown, prefix)
                return
            for dirpath, _dirs, files, dir_fd in os.fwalk(".", dir_fd=top,
                                                         follow_symlinks=False):
                for name in sorted(files):
                    rel = os.path.normpath(os.path.join(shown, dirpath, name))
                    try:
                        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                                     dir_fd=dir_fd)
                    except OSError as exc:
                        self.skipped.append({"path": rel, "reason": exc.strerror or str(exc)})
                        continue
                    try:
                        self._add_file(fd, rel, prefix)
                    finally:
                        os.close(fd)
        finally:
            os.close(top)

    def _add_file(self, fd: int, path: str, prefix: str) -> None:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            self.skipped.append({"path": path, "reason": "not a regular file"})
            return
        if len(self.files) >= self.max_files or self.total + info.st_size > self.max_bytes:
            self.truncated = True
            self.skipped.append({"path": path, "reason": "size or file-count bound reached"})
            return
        chunks = []
        digest = hashlib.sha256()
        remaining = self.max_bytes - self.total
        while remaining > 0:
            chunk = os.read(fd, min(1 << 20, remaining))
            if not chunk:
                break
            digest.update(chunk)
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        self.total += len(data)
        entry = {"path": path, "archive": f"{prefix}/{path.lstrip('/')}", "size": len(data),
                 "sha256": digest.hexdigest(), "mode": info.st_mode, "uid": info.st_uid,
                 "gid": info.st_gid, "mtime": info.st_mtime}
        self.files.append((entry, data if self.keep else b""))


def _open_beneath(root_fd: int | None, path: str) -> int:
    """Open `path` below `root_fd` one component at a time, refusing symlinks, so that an
    absolute link inside a container cannot resolve against the agent's (host) root."""
    parts = [p for p in path.split("/") if p and p != "."]
    if root_fd is None:
        current = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    else:
        current = os.dup(root_fd)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            nxt = os.open(part, flags, dir_fd=current)
            os.close(current)
            current = nxt
        return current
    except BaseException:
        os.close(current)
        raise


def _overlay_upper(pid: int) -> str | None:
    """The upper directory of the overlay mounted at the process's root, if any."""
    try:
        with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or fields[4] != "/":
                    continue
                fstype, _source, options = (right.split() + ["", "", ""])[:3]
                if fstype != "overlay":
                    continue
                for option in options.split(","):
                    if option.startswith("upperdir="):
                        upper = option[len("upperdir="):]
                        return upper if os.path.isdir(upper) else None
    except OSError:
        return None
    return None


def _manifest(plan: Plan, handle: ProcessHandle, collector: _Collector) -> dict[str, Any]:
    alert = plan.private["alert"]
    event = getattr(alert, "event", None)
    fields = dict(event) if isinstance(event, dict) else None
    return {
        "taken_ns": time.time_ns(),
        "target": plan.target,
        "alert": alert.falco_json() if hasattr(alert, "falco_json") else None,
        "event": fields,
        "process_tree": [_describe(p) for p in [handle.pid] + ancestors(handle.pid)],
        "open_files": _open_files(handle.pid),
        "sockets": _sockets(handle.pid),
        "sources": plan.render["sources"],
        "upload": plan.render.get("upload"),
        "files": [{k: v for k, v in entry.items() if k != "archive"} | {
            "archive": entry["archive"]} for entry, _ in collector.files],
        "skipped": collector.skipped,
        "truncated": collector.truncated,
        "bytes": collector.total,
    }


def _describe(pid: int) -> dict[str, Any]:
    stat_ = read_stat(pid)
    info: dict[str, Any] = {"pid": pid}
    if stat_ is not None:
        info.update(comm=stat_.comm, ppid=stat_.ppid, start_ticks=stat_.start_ticks)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            info["cmdline"] = [a.decode("utf-8", "replace")
                               for a in handle.read().split(b"\0") if a]
    except OSError:
        pass
    try:
        info["exe"] = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        pass
    return info


def _open_files(pid: int) -> list[dict[str, Any]]:
    found = []
    try:
        names = sorted(os.listdir(f"/proc/{pid}/fd"), key=int)
    except OSError:
        return found
    for fd in names:
        try:
            found.append({"fd": int(fd), "target": os.readlink(f"/proc/{pid}/fd/{fd}")})
        except OSError:
            continue
    return found


def _sockets(pid: int) -> list[dict[str, Any]]:
    inodes = set()
    for item in _open_files(pid):
        target = item["target"]
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: list[dict[str, Any]] = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for row in _proc_net(pid, proto):
            if row.get("inode") in inodes:
                found.append(row | {"proto": proto})
    return found


def _proc_net(pid: int, proto: str) -> Iterator[dict[str, str]]:
    try:
        with open(f"/proc/{pid}/net/{proto}", encoding="ascii", errors="replace") as handle:
            next(handle, None)
            for line in handle:
                cols = line.split()
                if len(cols) >= 10:
                    yield {"local": cols[1], "remote": cols[2], "state": cols[3],
                           "inode": cols[9]}
    except OSError:
        return


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


ACTION = Snapshot
