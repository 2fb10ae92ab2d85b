"""Threat: a process fills the directories a snapshot policy takes (its /tmp) with many small
files, links or fifos, or trips the rule again and again, so that the agent walks forever,
holds every name in memory, or fills the node's disk with archives.

The walk stops at its bounds, the snapshot directory stays within its cap under repeated
snapshots, and two matches in one second keep two archives. No root needed: the target is
our own child, so /proc/PID/root is readable. The million-file figures are in
tests/bench/bench_snapshot_walk.py."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions import snapshot as snapshot_module
from actions.process import read_stat
from actions.snapshot import ENTRIES_PER_FILE, MAX_SKIPPED_LISTED, _Collector, make_room
from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.errors import PermanentActionError
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder

RULE = "Read sensitive file untrusted"


def _fill(directory: Path, count: int, kind: str = "file") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        path = directory / f"f{n:06d}"
        if kind == "file":
            path.touch()
        else:
            path.symlink_to("/etc/hostname")


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names the snapshot module opens."""
    seen: list[str] = []
    real = os.open

    def counting(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        seen.append(str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(snapshot_module.os, "open", counting)
    return seen


def test_the_walk_stops_at_max_files(tmp_path: Path, opens: list[str]) -> None:
    _fill(tmp_path / "many" / "a", 3000)
    _fill(tmp_path / "many" / "b", 3000)
    opens.clear()
    collector = _Collector(max_bytes=1 << 20, max_files=100, keep=True)
    collector.add_tree(str(tmp_path / "many"), None, "rootfs")
    assert len(collector.files) == 100 and collector.truncated
    # every file kept was opened once; beyond the bound, nothing more is opened
    assert len(opens) <= 100 + 2 + len(str(tmp_path).split("/")) + 2
    assert collector.entries <= 2 + 100 + 1  # a, b, the files kept, the one it stopped at


def test_the_walk_stops_at_max_bytes(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for n in range(50):
        (big / f"b{n}").write_bytes(b"x" * 1000)
    collector = _Collector(max_bytes=10_000, max_files=10_000, keep=True)
    collector.add_tree(str(big), None, "rootfs")
    assert collector.total == 10_000 and len(collector.files) == 10 and collector.truncated
    assert collector.entries <= 11


def test_entries_that_are_never_kept_still_count(tmp_path: Path) -> None:
    """Links are skipped, not kept: a tree of them must not be walked to its end, and the
    manifest names only so many of them."""
    _fill(tmp_path / "links", 5000, kind="link")
    collector = _Collector(max_bytes=1 << 20, max_files=200, keep=True)
    collector.add_tree(str(tmp_path / "links"), None, "rootfs")
    assert collector.files == [] and collector.truncated
    assert collector.entries <= ENTRIES_PER_FILE * 200 + 64
    assert len(collector.skipped) <= MAX_SKIPPED_LISTED
    assert len(collector.skipped) + collector.skipped_more == collector.entries - 1


def test_make_room_removes_the_oldest_archives_only(tmp_path: Path) -> None:
    for n in range(5):
        path = tmp_path / f"a{n}.tar.gz"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1000 + n, 1000 + n))
    (tmp_path / "notes.txt").write_bytes(b"y" * 500)
    (tmp_path / "dead.tar.partial").write_bytes(b"z" * 5000)  # a write that died
    removed = make_room(tmp_path, 2000, 4600)
    assert removed == ["a0.tar.gz", "a1.tar.gz", "a2.tar.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a3.tar.gz", "a4.tar.gz",
                                                          "notes.txt"]
    with pytest.raises(PermanentActionError, match="does not fit in directory_max_bytes"):
        make_room(tmp_path, 5000, 4600)
    with pytest.raises(PermanentActionError, match="not snapshot archives"):
        make_room(tmp_path, 4500, 4600)
    assert (tmp_path / "notes.txt").exists()


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[dict[str, Any]]:
    evidence = tmp_path / "victim"
    evidence.mkdir()
    for n in range(40):
        (evidence / f"e{n}").write_bytes(os.urandom(2000))  # incompressible
    proc = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while read_stat(proc.pid) is None or read_stat(proc.pid).comm != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield {"pid": proc.pid, "dir": evidence}
    finally:
        proc.kill()
        proc.wait()


def _alert(pid: int) -> Alert:
    event = {"proc.pid": pid, "proc.start_ticks": read_stat(pid).start_ticks,
             "proc.name": "sleep", "fd.name": "/etc/shadow", "container.id": None}
    return Alert(rule=RULE, priority=Priority.WARNING, output="shadow read",
                 output_fields={}, time_ns=time.time_ns(), tags=(), event=event)


def test_repeated_snapshots_stay_within_the_directory_cap_with_unique_names(
        tmp_path: Path, victim: dict[str, Any]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
- policy: evidence
  match: {{rules: ["{RULE}"]}}
  actions:
    - snapshot: {{paths: ["{victim['dir']}"], changed: false, max_bytes: 100Ki,
                  directory_max_bytes: 300Ki}}
  dry_run: false
  rate_limit: {{max: 100, per: 1m, burst: 100}}
""")
    audit = tmp_path / "audit.jsonl"
    snapshots = tmp_path / "snapshots"
    responder = Responder(load_policies([policy]), JsonlAudit(audit),
                          snapshot_dir=snapshots).start()
    for _ in range(8):  # within a second or two: names must not collide
        responder.submit(_alert(victim["pid"]))
        responder.drain()
    responder.stop()
    records = [r for r in read_audit(audit) if r["kind"] == "action"]
    assert [r["outcome"] for r in records] == ["done"] * 8, records
    paths = [r["detail"]["path"] for r in records]
    assert len(set(paths)) == 8
    held = list(snapshots.iterdir())
    assert sum(p.stat().st_size for p in held) <= 300 * 1024
    # each archive holds ~80 KiB that gzip cannot shrink: only the newest few fit
    assert 1 <= len(held) < 8
    assert {p.name for p in held} == {Path(p).name for p in paths[-len(held):]}
    assert sum(len(r["detail"]["removed"]) for r in records) == 8 - len(held)
