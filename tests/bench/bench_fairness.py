"""Fairness of the responder's lanes: while workload A floods matches whose policy snapshots
a large directory and notifies a webhook that hangs, kills for workload B keep their
latency and none is dropped (issue 13: the kill never waits behind slow work).

Run as root:  .venv/bin/python tests/bench/bench_fairness.py [TRIALS] [--rate N]
                [--size-mb N]

A's flood: `--rate` matches a second (default 500) from one long-lived process of
"container A", each answered with `snapshot` of a `--size-mb` directory (default 64 MB of
incompressible files) and `notify` to a local webhook that never answers. B: TRIALS (200)
detached `sleep` processes of "container B", each killed by its own policy; the alert is
stamped here (detection excluded, as in bench_kill_latency.py). Printed: event -> signal
figures (tests/bench/kill_timing.py), B's kills done and dropped, and what the slow lane
ran and dropped for A. Target: p99 event -> signal <= 5 ms, no B kill dropped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from enforcer.alert import Alert  # noqa: E402
from enforcer.audit.jsonl import JsonlAudit, read_audit  # noqa: E402
from enforcer.policy.loader import load_policies  # noqa: E402
from enforcer.priority import Priority  # noqa: E402
from enforcer.respond.responder import Responder  # noqa: E402
from tests.bench.kill_timing import ExitClock, kills_from_audit, report  # noqa: E402
from tests.receivers import webhook_recorder  # noqa: E402
from tests.system.victims import spawn  # noqa: E402


def alert(rule: str, pid: int, start_ticks: int, container: str) -> Alert:
    now = time.time_ns()
    return Alert(rule=rule, priority=Priority.WARNING, output="bench", output_fields={},
                 time_ns=now, event={"proc.pid": pid, "proc.start_ticks": start_ticks,
                                     "evt.rawtime": now, "container.id": container})


def main(trials: int, rate: int, size_mb: int) -> int:
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 3
    work = Path(tempfile.mkdtemp(prefix="enforcer-fair-"))
    try:
        return run(work, trials, rate, size_mb)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, trials: int, rate: int, size_mb: int) -> int:
    big = work / "big"
    big.mkdir()
    for i in range(size_mb):
        (big / f"f{i}").write_bytes(os.urandom(1024 * 1024))
    attacker = spawn(["/bin/sleep", "600"], work, name="a")
    with webhook_recorder() as hook:
        hook.hang.set()
        policy = work / "policies.yaml"
        policy.write_text(f"""
- policy: a-snapshot-notify
  match: {{rules: [A flood]}}
  actions:
    - snapshot: {{paths: [{big}], changed: false, max_bytes: {2 * size_mb}Mi}}
    - notify: {{url: "http://127.0.0.1:{hook.port}/hook", timeout: 30}}
  dry_run: false
- policy: b-kill
  match: {{rules: [B attack]}}
  actions: [kill]
  dry_run: false
""")
        print(f"starting {trials} victims…", file=sys.stderr)
        victims = [spawn(["/bin/sleep", "120"], work, name=f"v{i}") for i in range(trials)]
        clock = ExitClock()
        audit_path = work / "audit.jsonl"
        responder = Responder(load_policies([policy]), JsonlAudit(audit_path),
                              state_dir=work / "state", snapshot_dir=work / "snapshots").start()
        stop = threading.Event()
        sent = Counter()

        def flood() -> None:
            gap = 1.0 / rate
            while not stop.is_set():
                responder.submit(alert("A flood", attacker.pid, attacker.start_ticks, "A"))
                sent["A"] += 1
                time.sleep(gap)

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        time.sleep(2)  # the flood is under way: snapshots running, notifies hanging
        try:
            for victim in victims:
                responder.submit(alert("B attack", victim.pid, victim.start_ticks, "B"))
                deadline = time.monotonic() + 10
                while victim.alive() and time.monotonic() < deadline:
                    time.sleep(0.001)
                time.sleep(0.01)  # B's matches come one at a time, amid A's flood
        finally:
            stop.set()
            flooder.join()
            hook.release.set()
            responder.stop(timeout=60)
        for victim in victims:
            victim.exit_code()
        records = list(read_audit(audit_path))
        kills = kills_from_audit(records, clock.exits())
        clock.close()
        for victim in victims:
            victim.cleanup()
        attacker.cleanup()
    outcomes = Counter((r.get("policy"), r.get("action"), r["outcome"]) for r in records
                       if r["kind"] in ("action", "drop"))
    print(report(f"kills for workload B amid workload A's flood ({sent['A']} matches at "
                 f"{rate}/s, snapshot of {size_mb} MB + hanging notify; worker "
                 f"{responder.scheduling.describe()})", kills))
    b_dropped = sum(n for (p, _a, o), n in outcomes.items() if p == "b-kill" and o != "done")
    print(f" B kills done: {len(kills)} of {trials}; B not done: {b_dropped}")
    print(" A's outcomes: " + ", ".join(f"{a} {o}: {n}" for (p, a, o), n in
                                        sorted(outcomes.items(), key=str) if p != "b-kill"))
    return 0 if len(kills) == trials and not b_dropped else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", type=int, nargs="?", default=200)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--size-mb", type=int, default=64)
    options = parser.parse_args()
    raise SystemExit(main(options.trials, options.rate, options.size_mb))
