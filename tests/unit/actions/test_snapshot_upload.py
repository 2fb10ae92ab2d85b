"""The snapshot's upload to S3-compatible storage, end to end through the responder against a
real S3 HTTP API on loopback (moto's server), with a real process whose files are taken.

No root needed: the victim is our own child, so /proc/PID/root is readable."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import re
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from actions.process import read_stat
from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder
from enforcer.respond.retry import RetryPolicy

BUCKET = "evidence"
RULE = "Read sensitive file untrusted"
FAST = RetryPolicy(attempts=3, max_seconds=5, initial_wait=0.01, max_wait=0.02)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials from the environment, as the agent gets them; nothing from ~/.aws or
    instance metadata."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3(s3_server: str, aws_env: None) -> Any:
    """A client of the server (a fresh bucket per test) to check what landed."""
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = f"{BUCKET}-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    return client


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A live process and the files a snapshot of it should hold."""
    evidence = tmp_path / "victim"
    evidence.mkdir()
    (evidence / "dropper").write_bytes(b"#!/bin/sh\n" + uuid.uuid4().hex.encode() + b"\n")
    (evidence / "notes.txt").write_bytes(b"x" * 5000)
    proc = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while read_stat(proc.pid) is None or read_stat(proc.pid).comm != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield {"pid": proc.pid, "dir": evidence, "proc": proc}
    finally:
        proc.kill()
        proc.wait()


def alert_for(pid: int, container: str | None = None) -> Alert:
    event = {"proc.pid": pid, "proc.start_ticks": read_stat(pid).start_ticks,
             "proc.name": "sleep", "fd.name": "/etc/shadow", "container.id": container}
    return Alert(rule=RULE, priority=Priority.WARNING, output="shadow read",
                 output_fields={"fd.name": "/etc/shadow"}, time_ns=time.time_ns(),
                 tags=("filesystem",), event=event)


def respond(tmp_path: Path, alert: Alert, upload: str, *, dry_run: bool = False,
            paths: str = "") -> dict[str, Any]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
- policy: evidence
  match: {{rules: ["{RULE}"]}}
  actions:
    - snapshot: {{paths: [{paths}], changed: false, upload: {upload}}}
  dry_run: false
""")
    audit = tmp_path / "audit.jsonl"
    responder = Responder(load_policies([policy]), JsonlAudit(audit), dry_run=dry_run,
                          node_name="node-1", snapshot_dir=tmp_path / "snapshots",
                          retry=FAST).start()
    responder.submit(alert)
    responder.drain()
    responder.stop()
    records = [r for r in read_audit(audit) if r["kind"] == "action"]
    if len(records) == 1:  # dry-run, or no snapshot taken: nothing to upload
        assert "pending" not in records[0]
        return records[0]
    # the snapshot is done once written; its upload is audited as its own record after it
    snapshot, upload = records
    assert snapshot["action"] == "snapshot" and snapshot["outcome"] == "done", snapshot
    assert snapshot["pending"] == "snapshot.upload"
    assert snapshot["detail"]["upload"]["status"] == "pending"
    assert upload["action"] == "snapshot.upload" and upload["index"] == snapshot["index"]
    assert upload["match_id"] == snapshot["match_id"]
    assert upload["target"] == snapshot["target"] and upload["render"] == snapshot["render"]
    assert upload["detail"]["path"] == snapshot["detail"]["path"]
    assert upload["detail"]["upload"]["key"] == snapshot["detail"]["upload"]["key"]
    return upload


def test_upload_lands_under_a_structured_key_with_the_manifests_content(
        tmp_path: Path, s3: Any, s3_server: str, victim: dict[str, Any]) -> None:
    pid = victim["pid"]
    rec = respond(tmp_path, alert_for(pid),
                  f"{{url: s3://{s3.bucket}/cases, endpoint: '{s3_server}', region: us-east-1}}",
                  paths=str(victim["dir"]))
    assert rec["outcome"] == "done", rec
    detail, upload = rec["detail"], rec["detail"]["upload"]
    start = read_stat(pid).start_ticks
    assert re.fullmatch(rf"cases/node-1/host/\d{{4}}/\d\d/\d\d/\d{{8}}T\d{{6}}Z-"
                        rf"read-sensitive-file-untrusted-{pid}-{start}\.tar\.gz", upload["key"])
    assert upload["key"] == rec["render"]["upload"]["key"]  # the planned key is the one used
    assert upload["bucket"] == s3.bucket and upload["status"] == "done"
    assert upload["endpoint"] == s3_server

    body = s3.get_object(Bucket=s3.bucket, Key=upload["key"])["Body"].read()
    local = Path(detail["path"]).read_bytes()
    assert body == local  # the local snapshot is kept, and is what was uploaded
    assert hashlib.sha256(body).hexdigest() == detail["sha256"]
    assert upload["bytes"] == len(body) == detail["size"]
    assert upload["etag"] == hashlib.md5(body).hexdigest()  # single-part PUT
    head = s3.head_object(Bucket=s3.bucket, Key=upload["key"])
    assert head["Metadata"]["sha256"] == detail["sha256"]
    assert head["Metadata"]["node"] == "node-1"

    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        manifest_bytes = tar.extractfile("manifest.json").read()
        contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers()
                    if m.isfile() and m.name != "manifest.json"}
    manifest = json.loads(manifest_bytes)
    entries = {f["archive"]: f for f in manifest["files"]}
    dropper = f"rootfs{victim['dir']}/dropper"
    assert set(entries) == set(contents) and dropper in entries
    for name, data in contents.items():
        assert hashlib.sha256(data).hexdigest() == entries[name]["sha256"], name
    assert entries[dropper]["sha256"] == \
        hashlib.sha256((victim["dir"] / "dropper").read_bytes()).hexdigest()
    assert manifest["upload"]["key"] == upload["key"]
    # the manifest is also its own object, next to the archive, byte for byte
    side = upload["manifest"]["key"]
    assert side == upload["key"].removesuffix(".tar.gz") + ".manifest.json"
    assert s3.get_object(Bucket=s3.bucket, Key=side)["Body"].read() == manifest_bytes


def test_dry_run_renders_the_key_and_endpoint_and_uploads_nothing(
        tmp_path: Path, s3: Any, s3_server: str, victim: dict[str, Any]) -> None:
    rec = respond(tmp_path, alert_for(victim["pid"]),
                  f"{{url: s3://{s3.bucket}/cases, endpoint: '{s3_server}'}}",
                  paths=str(victim["dir"]), dry_run=True)
    assert rec["outcome"] == "dry-run", rec
    planned = rec["render"]["upload"]
    assert planned["endpoint"] == s3_server and planned["bucket"] == s3.bucket
    assert planned["key"].startswith("cases/node-1/host/")
    assert rec["detail"]["upload"]["key"] == planned["key"]
    assert f"s3://{s3.bucket}/{planned['key']} at {s3_server}" in rec["message"]
    assert s3.list_objects_v2(Bucket=s3.bucket).get("KeyCount") == 0
    assert not (tmp_path / "snapshots").exists()


class _SlowDown(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that answers every PUT 503 SlowDown, counting them; `on_put` runs
    before the answer."""

    protocol_version = "HTTP/1.1"  # answers botocore's Expect: 100-continue at once
    puts = 0

    def on_put(self) -> None:
        pass

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).puts += 1
        self.on_put()
        body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                b"<Message>Please reduce your request rate.</Message></Error>")
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving(handler: type[_SlowDown]) -> Iterator[str]:
    """The handler on a free loopback port: its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Overloaded(_SlowDown):
    """On the first PUT it ends `victim` (as a kill after the snapshot would): a retry
    that took the snapshot again would find no process."""

    victim: Any = None

    def on_put(self) -> None:
        if self.victim is not None:
            self.victim.kill()
            self.victim.wait()


@pytest.fixture
def overloaded() -> Iterator[tuple[str, type[_Overloaded]]]:
    handler = type("Overloaded", (_Overloaded,), {"puts": 0})
    with _serving(handler) as url:
        yield url, handler


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_kept_and_failed(rec: dict[str, Any], tmp_path: Path) -> None:
    assert rec["outcome"] == "failed", rec
    assert "snapshot written to" in rec["error"] and "upload failed" in rec["error"]
    assert rec["detail"]["upload"]["status"] == "failed"
    kept = Path(rec["detail"]["path"])
    assert kept.is_file()
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == rec["detail"]["sha256"]
    # retries re-sent the upload only: the snapshot was taken once
    assert list((tmp_path / "snapshots").iterdir()) == [kept]


def test_a_503_endpoint_is_retried_within_bounds_then_fails_keeping_the_snapshot(
        tmp_path: Path, aws_env: None, victim: dict[str, Any],
        overloaded: tuple[str, type[_Overloaded]]) -> None:
    url, handler = overloaded
    handler.victim = victim["proc"]
    rec = respond(tmp_path, alert_for(victim["pid"]),
                  f"{{url: 's3://evidence/x', endpoint: '{url}'}}", paths=str(victim["dir"]))
    _assert_kept_and_failed(rec, tmp_path)
    assert "503 SlowDown" in rec["error"]
    assert rec["retries"] == FAST.attempts - 1
    assert handler.puts == FAST.attempts  # botocore's own retries are off: ours are the bound


def test_an_unreachable_endpoint_is_retried_then_fails_keeping_the_snapshot(
        tmp_path: Path, aws_env: None, victim: dict[str, Any]) -> None:
    rec = respond(tmp_path, alert_for(victim["pid"]),
                  f"{{url: 's3://evidence/x', endpoint: 'http://127.0.0.1:{_closed_port()}'}}",
                  paths=str(victim["dir"]))
    _assert_kept_and_failed(rec, tmp_path)
    assert "cannot reach" in rec["error"]
    assert rec["retries"] == FAST.attempts - 1


def test_a_missing_bucket_fails_at_once_keeping_the_snapshot(
        tmp_path: Path, s3: Any, s3_server: str, victim: dict[str, Any]) -> None:
    rec = respond(tmp_path, alert_for(victim["pid"]),
                  f"{{url: 's3://no-such-bucket-{uuid.uuid4().hex[:6]}', "
                  f"endpoint: '{s3_server}'}}", paths=str(victim["dir"]))
    _assert_kept_and_failed(rec, tmp_path)
    assert "NoSuchBucket" in rec["error"]
    assert rec.get("retries", 0) == 0


def test_a_failed_snapshot_is_not_a_failed_upload(
        tmp_path: Path, s3: Any, s3_server: str, victim: dict[str, Any]) -> None:
    # no paths and no overlay root: nothing to take, so nothing is uploaded
    rec = respond(tmp_path, alert_for(victim["pid"]),
                  f"{{url: s3://{s3.bucket}, endpoint: '{s3_server}'}}")
    assert rec["outcome"] == "failed"
    assert "nothing to snapshot" in rec["error"]
    assert "upload" not in (rec.get("detail") or {})
    assert s3.list_objects_v2(Bucket=s3.bucket).get("KeyCount") == 0


def test_credentials_from_a_mounted_file_and_none_at_all(
        tmp_path: Path, s3: Any, s3_server: str, victim: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    secret = tmp_path / "secret" / "credentials"
    secret.parent.mkdir()
    secret.write_text("[evidence]\naws_access_key_id = fromfile\n"
                      "aws_secret_access_key = fromfile\n")
    (tmp_path / "a").mkdir()
    rec = respond(tmp_path / "a", alert_for(victim["pid"]),
                  f"{{url: s3://{s3.bucket}, endpoint: '{s3_server}', "
                  f"credentials_file: {secret}, profile: evidence}}", paths=str(victim["dir"]))
    assert rec["outcome"] == "done", rec
    (tmp_path / "b").mkdir()
    rec = respond(tmp_path / "b", alert_for(victim["pid"]),
                  f"{{url: s3://{s3.bucket}, endpoint: '{s3_server}'}}", paths=str(victim["dir"]))
    assert rec["outcome"] == "failed" and "no S3 credentials" in rec["error"], rec
    assert Path(rec["detail"]["path"]).is_file()


def test_hostile_event_values_never_reach_the_key_or_the_file_name(
        tmp_path: Path, s3: Any, s3_server: str, victim: dict[str, Any]) -> None:
    rec = respond(tmp_path, alert_for(victim["pid"], container="../../etc/cron.d"),
                  f"{{url: s3://{s3.bucket}/cases, endpoint: '{s3_server}'}}",
                  paths=str(victim["dir"]))
    assert rec["outcome"] == "done", rec
    key = rec["detail"]["upload"]["key"]
    segments = key.split("/")
    assert ".." not in segments and segments[:2] == ["cases", "node-1"]
    assert re.fullmatch(r"x-[0-9a-f]{16}", segments[2])
    assert Path(rec["detail"]["path"]).parent == tmp_path / "snapshots"


class _Hanging(_SlowDown):
    """Takes the first PUT and answers nothing until the test says so (`release`), as a
    dead storage host behind a live load balancer does; then 503s."""

    holding: threading.Event
    release: threading.Event

    def on_put(self) -> None:
        if type(self).puts == 1:
            self.holding.set()
            self.release.wait(300)


@pytest.fixture
def hanging() -> Iterator[tuple[str, type[_Hanging]]]:
    handler = type("Hanging", (_Hanging,), {"puts": 0, "holding": threading.Event(),
                                            "release": threading.Event()})
    with _serving(handler) as url:
        try:
            yield url, handler
        finally:
            handler.release.set()


def _actions(audit: Path) -> list[dict[str, Any]]:
    if not audit.exists():
        return []
    return [r for r in read_audit(audit) if r["kind"] == "action"]


def test_a_kill_after_a_snapshot_does_not_wait_for_a_hanging_upload(
        tmp_path: Path, aws_env: None, hanging: tuple[str, type[_Hanging]]) -> None:
    from tests.system.victims import spawn  # a victim outside our tree: the kill may hit it

    url, handler = hanging
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "dropper").write_bytes(b"#!/bin/sh\n" + uuid.uuid4().hex.encode() + b"\n")
    victim = spawn(["/bin/sleep", "120"], tmp_path, name="victim")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
- policy: evidence-then-kill
  match: {{rules: ["{RULE}"]}}
  actions:
    - snapshot: {{paths: [{evidence}], changed: false,
                 upload: {{url: 's3://evidence/x', endpoint: '{url}', timeout: 120}}}}
    - kill: {{}}
  dry_run: false
""")
    audit = tmp_path / "audit.jsonl"
    responder = Responder(load_policies([policy]), JsonlAudit(audit), node_name="node-1",
                          snapshot_dir=tmp_path / "snapshots", retry=FAST).start()
    try:
        responder.submit(alert_for(victim.pid))
        # the kill is done and the victim dead while the endpoint still holds the upload
        assert victim.exit_code(timeout=60) == -9
        assert handler.holding.wait(60)
        deadline = time.monotonic() + 60
        while [r["action"] for r in _actions(audit)] != ["snapshot", "kill"]:
            assert time.monotonic() < deadline, _actions(audit)
            time.sleep(0.02)
        assert not handler.release.is_set() and handler.puts == 1
        snapshot, kill = _actions(audit)
        assert snapshot["outcome"] == "done" and snapshot["pending"] == "snapshot.upload"
        assert snapshot["detail"]["upload"]["status"] == "pending"
        assert kill["outcome"] == "done", kill
        assert kill["target"]["pid"] == victim.pid
    finally:
        handler.release.set()
        responder.drain()
        responder.stop()
        victim.cleanup()
    snapshot, kill, upload = _actions(audit)
    # the upload's failure is audited on its own, after the kill, with the snapshot's path
    assert upload["action"] == "snapshot.upload" and upload["outcome"] == "failed", upload
    assert upload["match_id"] == kill["match_id"] == snapshot["match_id"]
    assert "snapshot written to" in upload["error"] and "503 SlowDown" in upload["error"]
    assert upload["detail"]["path"] == snapshot["detail"]["path"]
    assert upload["detail"]["upload"]["status"] == "failed"
    assert upload["retries"] == FAST.attempts - 1 and handler.puts == FAST.attempts
    kept = Path(snapshot["detail"]["path"])
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == snapshot["detail"]["sha256"]
    assert list((tmp_path / "snapshots").iterdir()) == [kept]
