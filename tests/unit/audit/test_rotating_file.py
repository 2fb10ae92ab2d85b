"""The rotating audit file when the disk misbehaves: short writes, a failed reopen after a
rotation, a queue that fills, and the fsync policy."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from enforcer.audit.rotating_file import FsyncPolicy, RotatingJsonl, RotatingJsonlAudit


class FlakyFile:
    """A binary file whose writes follow a script: an int writes that many bytes (a short
    write), an errno raises it, None writes everything."""

    def __init__(self, real: Any, script: list[int | None | OSError]):
        self.real, self.script = real, script

    def write(self, data: bytes) -> int:
        step = self.script.pop(0) if self.script else None
        if isinstance(step, OSError):
            raise step
        n = len(data) if step is None else min(step, len(data))
        return self.real.write(data[:n])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_short_writes_are_completed_in_place(tmp_path: Path) -> None:
    log = RotatingJsonl(tmp_path / "a.jsonl")
    log._file = FlakyFile(log._file, [5, 2, None, 1, OSError(errno.ENOSPC, "full"), None])
    log.write({"n": 1})  # 8 bytes: 5, 2, then the last one
    with pytest.raises(OSError):
        log.write({"n": 2})  # 1 byte, then the disk is full: the rest waits
    assert log.pending == 1
    log.write({"n": 3})  # the rest of 2 first, then 3
    assert [r["n"] for r in lines(tmp_path / "a.jsonl")] == [1, 2, 3]
    assert (log.written, log.pending, log.failures) == (3, 0, 1)


def test_a_failed_reopen_after_rotation_recovers(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.jsonl"
    log = RotatingJsonl(path, max_bytes=40)
    log.write({"n": 0, "pad": "x" * 20})
    real_open = log._open
    refused = {"n": 2}

    def open_or_refuse() -> None:
        if refused["n"]:
            refused["n"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real_open()

    monkeypatch.setattr(log, "_open", open_or_refuse)
    for n in (1, 2):
        with pytest.raises(OSError):
            log.write({"n": n, "pad": "x" * 20})
    assert log.pending == 2 and "No space" in log.last_error
    log.write({"n": 3, "pad": "x" * 20})  # the disk takes writes again
    records = [r["n"] for f in log.files() for r in lines(f)]
    assert records == [0, 1, 2, 3]
    assert log.pending == 0


def test_a_full_queue_loses_records_and_says_how_many(tmp_path: Path) -> None:
    log = RotatingJsonl(tmp_path / "a.jsonl", max_pending=2)
    log._file = FlakyFile(log._file, [OSError(errno.EIO, "I/O error")] * 4)
    for n in range(4):
        with pytest.raises(OSError):
            log.write({"n": n})
    log.write({"n": 4})
    got = lines(tmp_path / "a.jsonl")
    assert [r.get("n") for r in got] == [0, 1, None, 4]
    assert got[2]["kind"] == "audit_gap" and got[2]["lost"] == 2
    assert log.lost == 2


def test_the_sink_never_raises_and_reports(tmp_path: Path) -> None:
    sink = RotatingJsonlAudit(tmp_path / "a.jsonl")
    sink.file._file = FlakyFile(sink.file._file, [OSError(errno.ENOSPC, "full")])
    sink.record({"kind": "decision", "n": 1})
    assert "1 record(s) not yet written" in (sink.problem() or "")
    samples = {m.name: m.samples[0].value for m in sink.collector().collect()}
    assert samples == {"enforcer_audit_write_failures": 1,
                       "enforcer_audit_pending_records": 1,
                       "enforcer_audit_records_lost": 0}
    assert sink.file.retry()  # what the retry thread does every second
    assert sink.problem() is None
    sink.close()
    assert lines(tmp_path / "a.jsonl") == [{"kind": "decision", "n": 1}]


@pytest.mark.parametrize(("text", "policy"), [
    ("never", FsyncPolicy("never")), ("always", FsyncPolicy("always")),
    ("1s", FsyncPolicy("interval", 1.0)), ("250ms", FsyncPolicy("interval", 0.25)),
    (None, FsyncPolicy("never")), (True, FsyncPolicy("always")),
])
def test_fsync_policy(text: Any, policy: FsyncPolicy) -> None:
    assert FsyncPolicy.parse(text) == policy


@pytest.mark.parametrize("bad", ["sometimes", "0s", "-1s"])
def test_fsync_policy_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="fsync"):
        FsyncPolicy.parse(bad)


def test_fsync_always_syncs_each_record(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    log = RotatingJsonl(tmp_path / "a.jsonl", fsync="always")
    log.write({"n": 1})
    log.write({"n": 2})
    assert len(synced) == 2
    never = RotatingJsonl(tmp_path / "b.jsonl")
    never.write({"n": 1})
    never.close()
    assert len(synced) == 2
