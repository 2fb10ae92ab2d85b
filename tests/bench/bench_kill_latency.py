"""Userspace kill latency through the real responder (queue, worker thread, policy, guards,
pidfd, JSONL audit), without eBPF detection: the alert is stamped here.

Run as root:  /work/main/.venv/bin/python tests/bench/bench_kill_latency.py [TRIALS]
                [--busy] [--switch-interval SECONDS] [--hogs N]

Each trial: a detached `sleep` process; an Alert stamped with time.time_ns() as the event
time (the live agent stamps it with the kernel event time: tests/bench/bench_in_kernel_kill.py
measures that, detection included); submit; wait until the responder is done. What is
measured and printed (event -> signal, event -> dead, per stage) is defined in
tests/bench/kill_timing.py, shared with bench_in_kernel_kill.py. Target: p99 <= 5 ms.

`--busy`: after submit() the submitting thread stays busy in Python until the kill is done,
as the live agent's detection loop does under load (it goes on with the next events), so the
responder's worker competes with it for the GIL (`--switch-interval` sets the interpreter's
switch interval after the responder started; the responder sets 0.5 ms). `--spinner` adds
another Python thread spinning all along. `--hogs N` starts N CPU-bound processes, each in
its own session, for the run: other workloads of the node (or an attacker) keeping the CPUs
busy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from enforcer.alert import Alert  # noqa: E402
from enforcer.audit.jsonl import JsonlAudit, read_audit  # noqa: E402
from enforcer.policy.loader import load_policies  # noqa: E402
from enforcer.priority import Priority  # noqa: E402
from enforcer.respond.responder import Responder  # noqa: E402
from tests.bench.kill_timing import ExitClock, kills_from_audit, report  # noqa: E402
from tests.system.victims import spawn  # noqa: E402


def _spin(stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1


def start_hogs(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             start_new_session=True) for _ in range(n)]


def main(trials: int = 200, busy: bool = False, switch_interval: float | None = None,
         hogs: int = 0, spinner: bool = False) -> int:
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 3
    work = Path(tempfile.mkdtemp(prefix="enforcer-bench-"))
    policy = work / "policy.yaml"
    policy.write_text("- policy: k\n  match: {rules: [Read sensitive file untrusted]}\n"
                      "  actions: [kill]\n  dry_run: false\n")
    print(f"starting {trials} victims…", file=sys.stderr)
    victims = [spawn(["/bin/sleep", "120"], work, name=f"v{i}") for i in range(trials)]
    clock = ExitClock()
    audit_path = work / "audit.jsonl"
    # every trial is one workload's repeat: the blast-radius breaker never trips on those
    responder = Responder(load_policies([policy]), JsonlAudit(audit_path)).start()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    stop = threading.Event()
    if spinner:
        threading.Thread(target=_spin, args=(stop,), daemon=True).start()
    hog_procs = start_hogs(hogs)
    try:
        for victim in victims:
            event_ns = time.time_ns()
            event = {"proc.pid": victim.pid, "proc.start_ticks": victim.start_ticks,
                     "evt.rawtime": event_ns, "fd.name": "/etc/shadow"}
            responder.submit(Alert(rule="Read sensitive file untrusted",
                                   priority=Priority.WARNING, output="bench",
                                   output_fields={}, time_ns=event_ns, event=event))
            while busy and responder.queue.unfinished_tasks:
                pass  # the detection loop's next events
            responder.drain()
    finally:
        for hog in hog_procs:
            hog.kill()
            hog.wait()
        stop.set()
        responder.stop()
    for victim in victims:  # the last exits reach the map within a few ms
        victim.exit_code()
    kills = kills_from_audit(read_audit(audit_path), clock.exits())
    clock.close()
    for victim in victims:
        victim.cleanup()
    mode = (f"busy detection thread, switch interval {sys.getswitchinterval() * 1000:g} ms"
            if busy else "idle detection thread")
    if spinner:
        mode += ", a spinning thread"
    if hogs:
        mode += f", {hogs} CPU hogs"
    print(report(f"responder kill [{mode}; worker {responder.scheduling.describe()}]",
                 kills))
    if len(kills) != trials:
        print(f"only {len(kills)} of {trials} kills done", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", type=int, nargs="?", default=200)
    parser.add_argument("--busy", action="store_true")
    parser.add_argument("--switch-interval", type=float)
    parser.add_argument("--hogs", type=int, default=0)
    parser.add_argument("--spinner", action="store_true")
    options = parser.parse_args()
    raise SystemExit(main(options.trials, options.busy, options.switch_interval, options.hogs,
                          options.spinner))
