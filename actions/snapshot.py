"""snapshot — before anything else, keep the evidence: a tar.gz of the container's changed
files (its overlay upper directory) and/or of listed paths under /proc/PID/root, with a
manifest.json holding the sha256 of every file, the event, the process tree and the
process's open files and sockets. Bounded in size; written to a local directory.

RBAC: none (node-local; the agent needs hostPID and read access to container storage).

Paths inside the container are opened one component at a time without following symlinks,
so a hostile container cannot point the agent at the host's files. The changed files are
those of the host overlay mount that is the process's root (enforcer.state.overlay: matched
by the device and inode of /proc/PID/root in the host's mount table, where the runtime
mounted it); never the upperdir= of the process's own mount table, which a process with a
mount namespace of its own writes itself.

Bounded: at most max_files files, max_bytes bytes and 4 x max_files directory entries looked
at (directories are read as streams); before an archive is written, the oldest archives of
the directory are removed until it fits in directory_max_bytes; names are unique per match.

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

import contextlib
import gzip
import hashlib
import io
import json
import os
import socket
import stat
import tarfile
import threading
import time
import uuid
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
from enforcer.state.overlay import trusted_upper_dir
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
    directory_max_bytes: int = param(1024**3, parse=parse_size,
                                     schema={"type": ["string", "integer"]},
                                     doc="total size the snapshot directory may hold (e.g. "
                                         "1Gi): the oldest archives are removed to make room "
                                         "before a new one is written")
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
        # unique per match: two matches of one process in one second keep two archives
        dest = directory / (f"{stamp}-{container}-{pid}-{handle.start_ticks}-"
                            f"{uuid.uuid4().hex[:12]}{ARCHIVE_SUFFIX}")
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
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        bound = _archive_bound(body, collector)
        with _DIRECTORY_LOCK:
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            removed = make_room(dest.parent, bound, self.params.directory_max_bytes)
            temp = dest.with_suffix(".partial")
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
                        "removed": removed,
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


ARCHIVE_SUFFIX = ".tar.gz"
MAX_SKIPPED_LISTED = 1000  # skipped entries named in the manifest; the rest are counted
ENTRIES_PER_FILE = 4  # the walk looks at most at this many entries per file it may keep
_DIRECTORY_LOCK = threading.Lock()  # one retention decision and write at a time


class _Collector:
    """Files kept for one snapshot, within bounds: at most `max_files` files and `max_bytes`
    bytes of content, and at most ENTRIES_PER_FILE * max_files directory entries looked at,
    so that a directory of a million files (or of a million links or fifos, which are never
    kept) costs a bounded walk. The walk reads directories as streams and stops as soon as a
    bound is reached."""

    def __init__(self, max_bytes: int, max_files: int, keep: bool):
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.max_entries = ENTRIES_PER_FILE * max_files + 64
        self.keep = keep
        self.total = 0
        self.entries = 0
        self.files: list[tuple[dict[str, Any], bytes]] = []
        self.skipped: list[dict[str, str]] = []
        self.skipped_more = 0
        self.truncated = False

    def _full(self) -> bool:
        if (len(self.files) >= self.max_files or self.total >= self.max_bytes
                or self.entries >= self.max_entries):
            self.truncated = True
        return self.truncated

    def _skip(self, path: str, reason: str) -> None:
        if len(self.skipped) < MAX_SKIPPED_LISTED:
            self.skipped.append({"path": path, "reason": reason})
        else:
            self.skipped_more += 1

    def add_tree(self, path: str, root_fd: int | None, prefix: str,
                 shown_as: str | None = None) -> None:
        """Add the file or tree at `path` (below `root_fd`, or a host path when None);
        entries are named `shown_as` + their path below `path` (default: `path`)."""
        shown = shown_as if shown_as is not None else path
        if self._full():
            self._skip(path, "size or file-count bound reached")
            return
        try:
            top = _open_beneath(root_fd, path)
        except OSError as exc:
            self._skip(path, exc.strerror or str(exc))
            return
        try:
            if stat.S_ISREG(os.fstat(top).st_mode):
                self._add_file(top, shown, prefix)
            elif stat.S_ISDIR(os.fstat(top).st_mode):
                self._walk(top, shown, prefix)
            else:
                self._skip(shown, "not a regular file")
        finally:
            os.close(top)

    def _walk(self, top: int, shown: str, prefix: str) -> None:
        # depth first over directory descriptors, never following a symlink; each directory
        # is read as a stream (os.scandir on a descriptor), never listed whole
        stack = [(os.dup(top), shown)]
        try:
            while stack and not self._full():
                dir_fd, where = stack.pop()
                try:
                    with os.scandir(dir_fd) as entries:
                        for entry in entries:
                            self.entries += 1
                            if self._full():
                                break
                            rel = os.path.normpath(os.path.join(where, entry.name))
                            if entry.is_dir(follow_symlinks=False):
                                try:
                                    sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY
                                                  | os.O_NOFOLLOW, dir_fd=dir_fd)
                                except OSError as exc:
                                    self._skip(rel, exc.strerror or str(exc))
                                    continue
                                stack.append((sub, rel))
                            elif entry.is_file(follow_symlinks=False):
                                self._add_named(dir_fd, entry.name, rel, prefix)
                            else:
                                self._skip(rel, "not a regular file")
                finally:
                    os.close(dir_fd)
        finally:
            for dir_fd, _ in stack:
                os.close(dir_fd)

    def _add_named(self, dir_fd: int, name: str, rel: str, prefix: str) -> None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            self._skip(rel, exc.strerror or str(exc))
            return
        try:
            self._add_file(fd, rel, prefix)
        finally:
            os.close(fd)

    def _add_file(self, fd: int, path: str, prefix: str) -> None:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            self._skip(path, "not a regular file")
            return
        if len(self.files) >= self.max_files or self.total + info.st_size > self.max_bytes:
            self.truncated = True
            self._skip(path, "size or file-count bound reached")
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


def _archive_bound(manifest: bytes, collector: _Collector) -> int:
    """An upper bound of the archive's size: the tar stream (a 512-byte header per member,
    content padded to 512, two end blocks, padded to a 10 KiB record) and what gzip adds at
    worst (stored blocks: 5 bytes per 16 KiB or more, plus its header and trailer)."""
    def member(size: int) -> int:
        return 512 + -(-size // 512) * 512
    tar = member(len(manifest)) + sum(member(len(d) if collector.keep else e["size"])
                                      for e, d in collector.files) + 1024
    tar = -(-tar // 10240) * 10240
    return tar + tar // 16384 * 5 + 64


def make_room(directory: Path, need: int, cap: int) -> list[str]:
    """Remove the oldest archives in `directory` until what it holds plus `need` bytes fits
    in `cap`; returns the names removed. Files other than archives count but are never
    removed, except partial archives left by a write that died. Raises PermanentActionError
    when even removing every archive would not make room (the snapshot is then not
    written at all)."""
    if need > cap:
        raise PermanentActionError(
            f"a snapshot of up to {need} bytes does not fit in directory_max_bytes ({cap}): "
            "raise directory_max_bytes or lower max_bytes/max_files")
    archives: list[tuple[float, int, str]] = []
    used = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            if entry.name.endswith(".partial"):
                # left by a write that died with the agent (writes hold the lock)
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            used += info.st_size
            if entry.name.endswith(ARCHIVE_SUFFIX):
                archives.append((info.st_mtime, info.st_size, entry.name))
    archives.sort()
    removed: list[str] = []
    while used + need > cap and archives:
        _mtime, size, name = archives.pop(0)
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass
        used -= size
        removed.append(name)
    if used + need > cap:
        raise PermanentActionError(
            f"{directory} holds {used} bytes that are not snapshot archives: no room for "
            f"{need} more within directory_max_bytes ({cap}); clean it up or raise the cap")
    return removed


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
    """The container's changed files: the upper layer of the host overlay mount that is the
    process's root (never the upperdir= string of the process's own mount table, which a
    process with a mount namespace of its own writes itself)."""
    upper = trusted_upper_dir(pid)
    return upper if upper is not None and os.path.isdir(upper) else None


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
        "skipped_not_listed": collector.skipped_more,
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
