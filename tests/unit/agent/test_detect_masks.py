"""DetectionMasks keeping the kernel's quiet map in step with the table (fake /proc, fake
maps): what resets, re-reads and new probes do to the entries."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from enforcer.kernel.detection_masks import BIT, DetectionMasks
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_text
from enforcer.sources import syscalls as sc
from enforcer.sources.decode import decode, pack
from tests.unit.agent.test_detect_masks_soundness import _Kernel
from tests.unit.state.test_process_table import _fake_proc, _tracker

RULES = """
- rule: connect by nc
  desc: d
  condition: evt.type = connect and proc.name = nc
  output: o
  priority: WARNING
"""


def _started(tmp_path: Path, rules: str = RULES):
    tracker = _tracker(_fake_proc(tmp_path))
    kernel = _Kernel()
    masks = DetectionMasks(list(Engine(load_text(rules)).rules), kernel)
    masks.watch(tracker.table)
    for raw in (pack(code=sc.EV_FORK, tgid=100, ints=(101, 100), comm="bash", ts=10,
                     cgroup_id=1),
                pack(code=sc.CODES["execve"], tgid=101, comm="cat", path1="/usr/bin/cat",
                     argv=("cat",), ts=11, cgroup_id=1)):
        rec = decode(raw)
        tracker.apply(rec)
        masks.after(rec, tracker.ctx)
    return tracker, kernel, masks


def test_an_exec_writes_the_mask_with_its_born_and_identity(tmp_path: Path) -> None:
    _, kernel, _ = _started(tmp_path)
    quiet, born, uid, gid, cgroup, comm = kernel.quiet[101]
    assert quiet & BIT["connect"] and not quiet & BIT["execve"]
    assert (born, uid, gid, cgroup, comm) == (11, 0, 0, 1, b"cat")


def test_a_rename_seen_in_a_record_computes_the_mask_again(tmp_path: Path) -> None:
    tracker, kernel, masks = _started(tmp_path)
    rec = decode(pack(code=sc.CODES["connect"], tgid=101, comm="nc", ret=-111, ts=12,
                      cgroup_id=1))
    tracker.apply(rec)
    masks.after(rec, tracker.ctx)
    assert kernel.quiet[101][5] == b"nc"
    assert not kernel.quiet[101][0] & BIT["connect"]  # nc may connect as the rule says


def test_new_rules_take_every_entry_away_until_computed_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("enforcer.kernel.arming.cgroup_id", lambda *_: 1)  # no cgroup2 here
    tracker, kernel, masks = _started(tmp_path)
    masks.reset(list(Engine(load_text(RULES.replace("proc.name = nc", "proc.name = cat")))
                     .rules))
    assert kernel.quiet == {} and masks.needs_seed
    masks.seed_if_needed(tracker.ctx)
    assert not masks.needs_seed
    # seeded from the table: now cat may connect, bash may not
    assert not kernel.quiet[101][0] & BIT["connect"]
    assert kernel.quiet[100][0] & BIT["connect"]


def test_a_process_read_again_from_proc_is_computed_again(tmp_path: Path) -> None:
    tracker, kernel, masks = _started(tmp_path)
    assert kernel.quiet[101][0] & BIT["connect"]
    fresh = tracker.table.get(101)
    assert fresh is not None
    fresh = copy.copy(fresh)
    fresh.comm = "nc"
    tracker.table.replace(fresh)  # e.g. the in-kernel kill's resync after lost records
    rec = decode(pack(code=sc.CODES["openat"], tgid=100, comm="bash", ret=3, ts=13,
                      ints=(-100, 0, 0), path1="/etc/hostname", cgroup_id=1))
    tracker.apply(rec)
    masks.after(rec, tracker.ctx)
    assert not kernel.quiet[101][0] & BIT["connect"]


def test_new_probes_forget_the_borns_they_did_not_see(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("enforcer.kernel.arming.cgroup_id", lambda *_: 1)  # no cgroup2 here
    tracker, kernel, masks = _started(tmp_path)
    later = _Kernel()
    masks.use(later, tracker.ctx, born_from=5)  # the exec at 11 came after these probes
    assert later.quiet[101][1] == 11 and later.quiet[101][0] & BIT["connect"]
    fresh = _Kernel()
    masks.use(fresh, tracker.ctx, born_from=11)  # ...and before these: they noted none
    assert fresh.quiet[101][1] == 0


def test_computing_a_mask_never_asks_the_runtime(tmp_path: Path) -> None:
    """A mask computed at a container's first fork (runc's, before the runtime describes
    it) must not count as the container's first sighting: the set-aside hold of its first
    real event would start too early, and its alerts would lose their metadata."""
    tracker, kernel, masks = _started(tmp_path, RULES.replace("proc.name = nc",
                                                              "container.name = web"))
    registry = tracker.ctx.containers
    rec = decode(pack(code=sc.EV_FORK, tgid=200, ints=(201, 200), comm="sh", ts=20,
                      cgroup_id=7))
    tracker.apply(rec)
    masks.after(rec, tracker.ctx)
    assert 201 in kernel.quiet and not kernel.quiet[201][0] & BIT["connect"]
    assert registry.lookups == 0 and not registry._first_seen  # noqa: SLF001
