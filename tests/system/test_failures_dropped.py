"""Failed calls that no rule can match stay in the kernel (enforcer.kernel.results_filter), on real
opens: with the bundled rules' probes, a child's failed opens below a watched prefix never
reach userspace, its failed open of a `..` path (what the traversal rule wants) and its
successful opens do; without the drop (the control) the failed opens arrive. Root; a
source loaded as the agent loads it, a child process doing the opens."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from enforcer.kernel.open_filter import open_filter_for
from enforcer.kernel.results_filter import failures_dropped
from enforcer.resources import default_rules_dir
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules
from enforcer.sources.ebpf import EbpfSource, available_syscalls, plan
from enforcer.sources.probe import ProbeConfig

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

CHILD = r"""
import os, sys
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError:
        pass
"""
SENTINEL = "/etc/shadow"  # a watched path that exists: passes, and ends the child's run


def _seen(drop: bool, opens: list[str]) -> list[tuple[str, int]]:
    """(raw path, result) of the child's opens that reached userspace."""
    engine = Engine(load_rules([str(default_rules_dir())]))
    filt = open_filter_for(engine.rules)
    assert filt is not None
    base = ProbeConfig(agent_tgid=os.getpid(), open_prefixes=filt.prefixes,
                       open_suffixes=filt.suffixes,
                       failures_dropped=failures_dropped(engine.rules) if drop else ())
    cfg, _ = plan(frozenset({"openat"}), available_syscalls(), base)
    source = EbpfSource(cfg)
    source.open()
    try:
        child = subprocess.Popen([sys.executable, "-c", CHILD, *opens, SENTINEL])
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 30
        while not any(p == SENTINEL for p, _ in seen) and time.monotonic() < deadline:
            for rec in source.poll(50):
                if rec.get("proc.pid") == child.pid and rec.get("evt.type") == "openat":
                    seen.append((rec["_s1"], rec["evt.rawres"]))
        child.wait(10)
    finally:
        source.close()
    assert any(p == SENTINEL and r >= 0 for p, r in seen), "the sentinel open never arrived"
    return seen


def test_failed_opens_no_rule_wants_stay_in_the_kernel(ebpf_ready: None,
                                                        tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:10]
    missing = [f"/etc/sudoers.d/enforcer-missing-{marker}-{i}" for i in range(50)]
    traversal = f"/etc/../etc/enforcer-missing-{marker}"
    seen = _seen(True, [*missing, traversal])
    paths = {p for p, _ in seen}
    assert not paths & set(missing), "failed opens below a watched prefix crossed"
    assert traversal in paths  # the traversal rule may want it: it crosses


def test_without_the_drop_the_same_failures_cross(ebpf_ready: None) -> None:
    marker = uuid.uuid4().hex[:10]
    missing = [f"/etc/sudoers.d/enforcer-missing-{marker}-{i}" for i in range(5)]
    seen = _seen(False, missing)
    assert {p for p, r in seen if r < 0} >= set(missing)
