"""Benchmark: what per-process residues could keep in the kernel, on this host's own
processes (not collected by pytest; no privileges needed beyond reading /proc).

    .venv/bin/python tests/bench/bench_residue_reach.py [--rules FILE ...]

For every process running now (seeded into the process table as the agent does at start)
and every syscall the enabled rules watch, each rule that can match that syscall is
partially evaluated on the process's fixed fields (enforcer.kernel.residue's
process_decider, the in-kernel kill's own step). When every rule reduces to false, no
event of that syscall from that process can match: a per-process filter could keep all of
them in the kernel. Prints, per syscall, the share of processes for which that holds, and
the share of (process, syscall) pairs overall: the reach of issue 17's per-process
residues, before any kernel code is written for them.

The second column is what the kernel's detection masks do drop (enforcer.kernel.detection_masks, on
the same processes: ancestors, cwd and whatever the kernel check does not pin down stay
undecided there, so the share can only be lower); syscalls the masks never drop (exec,
chdir, the credential ones) show 0.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from enforcer.agent import build_state  # noqa: E402
from enforcer.kernel import residue as pe  # noqa: E402
from enforcer.kernel.arming import cgroup_id  # noqa: E402
from enforcer.kernel.detection_masks import BIT, QUIETABLE, container_state, may_bits  # noqa: E402
from enforcer.resources import default_rules_dir  # noqa: E402
from enforcer.rules.engine import Engine  # noqa: E402
from enforcer.rules.loader import load_rules  # noqa: E402
from enforcer.state.live_event import LiveEvent  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", action="append", default=None)
    args = ap.parse_args()
    engine = Engine(load_rules(args.rules or [str(default_rules_dir())]))
    types = sorted(engine.event_types() or ())
    tracker = build_state()
    tracker.table.seed()
    procs = [p for pid in list(tracker.table._procs) if (p := tracker.table.get(pid))]
    quiet: Counter[str] = Counter()
    masked: Counter[str] = Counter()
    for proc in procs:
        cgroup = cgroup_id(tracker.ctx.proc_root, proc.pid, tracker.ctx.cgroup_ids.mount)
        rec = {"proc.pid": proc.pid, "thread.tid": proc.pid, "user.uid": proc.uid,
               "group.gid": proc.gid, "_comm": proc.comm, "_cgroup_id": cgroup, "_ts_mono": 0}
        event = LiveEvent(rec, tracker.ctx, proc)
        mask = QUIETABLE & ~may_bits(engine.rules, event, container_state(event))
        for t in types:
            if mask & BIT.get(t, 0):
                masked[t] += 1
        for t in types:
            rec = {"proc.pid": proc.pid, "thread.tid": proc.pid, "user.uid": proc.uid,
                   "group.gid": proc.gid, "_comm": proc.comm, "_cgroup_id": 0,
                   "_ts_mono": 0, "evt.type": t}
            event = LiveEvent(rec, tracker.ctx, proc)
            decide = pe.process_decider(event)
            live = [r for r in engine.rules
                    if r.event_types is None or t in r.event_types]
            if all(pe.partial(r.expr, decide) is False for r in live):
                quiet[t] += 1
    n = max(len(procs), 1)
    print(f"{len(procs)} processes, {len(engine.rules)} enabled rules, {len(types)} syscalls")
    for t in types:
        print(f"  {t:<14} no rule can match for {quiet[t] / n:6.1%} of the processes, "
              f"dropped by the masks for {masked[t] / n:6.1%}")
    total = sum(quiet.values())
    print(f"(process, syscall) pairs no rule can match: {total / (n * len(types)):.1%}; "
          f"dropped by the masks: {sum(masked.values()) / (n * len(types)):.1%}")


if __name__ == "__main__":
    main()
