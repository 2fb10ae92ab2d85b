"""A real snapshot of a podman container, taken before the kill: the attacker writes
/tmp/dropper, triggers a rule, and the snapshot holds the dropper with its sha256."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.process import namespace_pids, read_stat
from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder
from tests.conftest import require, run_labels
from tests.system.images import PODMAN, RUN_LIMITS, ensure_busybox_image, podman_available

pytestmark = [pytest.mark.root, pytest.mark.podman]

MARK = f"dropper-{uuid.uuid4().hex}"
PAYLOAD = MARK.encode() + b"\n"  # what `echo MARK` writes


@pytest.fixture
def container(need_root: None) -> Iterator[dict[str, Any]]:
    require(podman_available(), "podman or busybox-static missing",
            "apt-get install podman runc busybox-static (scripts/setup.sh does)")
    image = ensure_busybox_image()
    name = f"enf-snap-{uuid.uuid4().hex[:8]}"
    # PID 1 waits; the attacker is its child, writes the dropper, then sleeps (as if it had
    # just read /etc/shadow).
    # /tmp/shadow and /tmp/etc are the classic escape: absolute links that a naive reader
    # of /proc/PID/root would resolve against the host's root.
    script = (f"echo {MARK} > /tmp/dropper; ln -s /etc/shadow /tmp/shadow; "
              "ln -s /etc /tmp/etc; head -c 200000 /dev/zero > /tmp/big; exec sleep 60")
    run = subprocess.run(PODMAN + ["run", "-d", "--name", name, *run_labels()] + RUN_LIMITS +
                         [image, "sh", "-c", f"sh -c \"{script}\" & wait"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()
    try:
        pid1 = int(subprocess.run(PODMAN + ["inspect", "-f", "{{.State.Pid}}", name],
                                  capture_output=True, text=True, check=True).stdout)
        attacker = _wait_for_child(pid1, "sleep")
        yield {"id": cid, "name": name, "pid1": pid1, "attacker": attacker}
    finally:
        subprocess.run(PODMAN + ["rm", "-f", "-t", "0", name], capture_output=True)


def _wait_for_child(parent: int, comm: str) -> int:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            stat = read_stat(int(child))
            if stat and stat.comm == comm:
                return int(child)
        time.sleep(0.05)
    raise AssertionError(f"no {comm} child of {parent}")


def alert_for(pid: int, cid: str) -> Alert:
    event = {"proc.pid": pid, "proc.start_ticks": read_stat(pid).start_ticks,
             "container.id": cid[:12], "fd.name": "/etc/shadow", "proc.name": "sleep"}
    return Alert(rule="Read sensitive file untrusted", priority=Priority.WARNING,
                 output="shadow read in container", output_fields={"fd.name": "/etc/shadow"},
                 time_ns=time.time_ns(), tags=("filesystem",), event=event)


def respond(tmp_path: Path, alert: Alert, actions: str) -> list[dict[str, Any]]:
    path = tmp_path / "policy.yaml"
    path.write_text(f"""
- policy: evidence-then-kill
  match: {{rules: [Read sensitive file untrusted]}}
  actions: {actions}
  dry_run: false
""")
    audit_path = tmp_path / "audit.jsonl"
    responder = Responder(load_policies([path]), JsonlAudit(audit_path),
                          snapshot_dir=tmp_path / "snapshots").start()
    responder.submit(alert)
    responder.drain()
    responder.stop()
    return [r for r in read_audit(audit_path) if r["kind"] == "action"]


def test_snapshot_holds_the_dropper_and_is_taken_before_the_kill(
        tmp_path: Path, container: dict[str, Any]) -> None:
    attacker = container["attacker"]
    records = respond(tmp_path, alert_for(attacker, container["id"]),
                      "[{snapshot: {paths: [/tmp]}}, {kill: {}}]")
    snap, kill = records
    assert snap["outcome"] == "done", snap
    assert kill["outcome"] == "done", kill
    tarball = Path(snap["detail"]["path"])
    with tarfile.open(tarball) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        stored = tar.extractfile("rootfs/tmp/dropper").read()
        names = tar.getnames()
    expected = hashlib.sha256(PAYLOAD).hexdigest()
    assert stored == PAYLOAD
    entries = {(f["archive"]): f for f in manifest["files"]}
    assert entries["rootfs/tmp/dropper"]["sha256"] == expected
    # the overlay upper dir (the container's changed files) has it too
    assert "changed/tmp/dropper" in names
    assert entries["changed/tmp/dropper"]["sha256"] == expected
    # taken while the attacker was alive, before the kill
    assert manifest["process_tree"][0]["pid"] == attacker
    assert manifest["process_tree"][0]["comm"] == "sleep"
    assert manifest["open_files"], "the open files of the live process are recorded"
    assert manifest["taken_ns"] < kill["start_ns"]
    assert manifest["alert"]["rule"] == "Read sensitive file untrusted"
    deadline = time.monotonic() + 5
    while read_stat(attacker) is not None and read_stat(attacker).state != "Z":
        assert time.monotonic() < deadline, "the attacker survived the kill"
        time.sleep(0.02)


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """moto's S3 server on loopback, credentials from the environment, a fresh bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="evidence")
    try:
        yield client, endpoint
    finally:
        server.stop()


def test_the_uploaded_snapshot_holds_the_dropper_and_precedes_the_kill(
        tmp_path: Path, container: dict[str, Any], s3_bucket: tuple[Any, str]) -> None:
    client, endpoint = s3_bucket
    attacker = container["attacker"]
    snap, kill, uploaded = respond(
        tmp_path, alert_for(attacker, container["id"]),
        f"[{{snapshot: {{paths: [/tmp/dropper], upload: {{url: s3://evidence/"
        f"cases, endpoint: '{endpoint}'}}}}}}, {{kill: {{}}}}]")
    assert snap["outcome"] == "done", snap
    assert kill["outcome"] == "done", kill
    # the kill runs once the archive is written; the upload follows, audited on its own
    assert snap["detail"]["upload"]["status"] == "pending"
    assert uploaded["action"] == "snapshot.upload" and uploaded["outcome"] == "done", uploaded
    assert uploaded["detail"]["path"] == snap["detail"]["path"]
    upload = uploaded["detail"]["upload"]
    assert upload["key"] == snap["detail"]["upload"]["key"]
    assert upload["key"].split("/")[2] == container["id"][:12]
    body = client.get_object(Bucket="evidence", Key=upload["key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == snap["detail"]["sha256"]
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        stored = tar.extractfile("changed/tmp/dropper").read()
    expected = hashlib.sha256(PAYLOAD).hexdigest()
    assert stored == PAYLOAD
    entries = {f["archive"]: f for f in manifest["files"]}
    assert entries["changed/tmp/dropper"]["sha256"] == expected
    assert entries["rootfs/tmp/dropper"]["sha256"] == expected
    assert manifest["taken_ns"] < kill["start_ns"]


def test_container_init_is_spared_unless_the_policy_targets_the_container(
        tmp_path: Path, container: dict[str, Any]) -> None:
    pid1 = container["pid1"]
    assert namespace_pids(pid1)[-1] == 1
    (rec,) = respond(tmp_path, alert_for(pid1, container["id"]), "[{kill: {}}]")
    assert rec["outcome"] == "suppressed" and rec["guard"] == "container-init", rec
    assert read_stat(pid1) is not None
    (tmp_path / "whole").mkdir()
    (rec,) = respond(tmp_path / "whole", alert_for(pid1, container["id"]),
                     "[{kill: {scope: container}}]")
    assert rec["outcome"] == "done", rec
    assert len(rec["detail"]["signalled"]) == 2  # sh (PID 1) and the attacker


def test_container_symlinks_never_reach_host_files(tmp_path: Path,
                                                  container: dict[str, Any]) -> None:
    attacker = container["attacker"]
    (snap, ) = respond(tmp_path, alert_for(attacker, container["id"]),
                       "[{snapshot: {paths: [/tmp, /tmp/etc/shadow, /tmp/shadow], "
                       "changed: false}}]")
    assert snap["outcome"] == "done", snap
    host_shadow = Path("/etc/shadow").read_bytes()
    with tarfile.open(snap["detail"]["path"]) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        contents = [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]
    assert all(host_shadow not in c for c in contents if host_shadow)
    archived = {f["path"] for f in manifest["files"]}
    assert "/tmp/dropper" in archived
    assert not archived & {"/tmp/shadow", "/tmp/etc/shadow"}
    skipped = {s["path"] for s in manifest["skipped"]}
    assert {"/tmp/shadow", "/tmp/etc/shadow"} <= skipped


def test_snapshots_are_bounded(tmp_path: Path, container: dict[str, Any]) -> None:
    (snap,) = respond(tmp_path, alert_for(container["attacker"], container["id"]),
                      "[{snapshot: {paths: [/tmp], changed: false, max_bytes: 100Ki}}]")
    assert snap["outcome"] == "done", snap
    assert snap["detail"]["truncated"] is True
    assert snap["detail"]["bytes"] <= 100 * 1024
    with tarfile.open(snap["detail"]["path"]) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert {"path": "/tmp/big", "reason": "size or file-count bound reached"} in \
        manifest["skipped"]
