"""In-kernel kill vs userspace kill, on the live agent (`enforcer`, real eBPF), upstream rule
"Read sensitive file untrusted" (narrowed to this benchmark's launcher, as in
tests/system/test_in_kernel_kill.py, so that nothing else on the machine is touched).

Run as root:  /work/main/.venv/bin/python tests/bench/bench_in_kernel_kill.py [TRIALS]

Prints, for `kill: {in_kernel: true}`: the fraction of `cat /etc/shadow` trials that read
zero bytes and were killed by SIGKILL; for the userspace kill (`in_kernel: false`): the
same fraction (cat is faster than any userspace answer), and, on victims that read
/etc/shadow and then sleep, the latency from the event's kernel timestamp to the signal and
to the victim's exit, p50/p90/p99/max with a per-stage breakdown (defined in
tests/bench/kill_timing.py, shared with bench_kill_latency.py).

`--userspace-only` skips the in-kernel trials.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.kill_timing import ExitClock, kills_from_audit, report  # noqa: E402
from tests.conftest import agent_paths  # noqa: E402
from tests.system.test_in_kernel_kill import Launcher, stop  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SLOW_READER = [sys.executable, "-c",
               "open('/etc/shadow').read(); import time; time.sleep(5)"]


def start(work: Path, launcher: Launcher, in_kernel: bool) -> tuple[subprocess.Popen, Path]:
    rules = work / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "falco_rules.yaml").write_text(
        (REPO / "tests/data/falco-rules/falco_rules.yaml").read_text())
    (rules / "zz_bench.yaml").write_text(
        "- rule: Read sensitive file untrusted\n"
        f"  condition: and proc.pname = {launcher.name}\n"
        "  override: {condition: append}\n")
    policy = work / "kill.yaml"
    policy.write_text("- policy: k\n  match: {rules: [Read sensitive file untrusted]}\n"
                      f"  actions: [{{kill: {{in_kernel: {str(in_kernel).lower()}}}}}]\n"
                      "  dry_run: false\n")
    audit = work / f"audit-{in_kernel}.jsonl"
    err = work / f"agent-{in_kernel}.err"
    # its state and snapshot dirs in the run's own directory too, never under /var
    env = dict(os.environ, PYTHONPATH=str(REPO), **agent_paths(work / f"agent-{in_kernel}"))
    with err.open("w") as fh:
        agent = subprocess.Popen([sys.executable, "-m", "enforcer", "--rules", str(rules),
                                  "--policies", str(policy), "--audit-log", str(audit),
                                  # every trial is a repeat from one workload: the
                                  # blast-radius breaker never trips on those
                                  # any free port: other agents on the machine use 9376
                                  "--http-addr", "127.0.0.1:0"],
                                 stdout=subprocess.DEVNULL, stderr=fh, env=env)
    while "enforcer: ready" not in err.read_text():  # not "already in use"
        if agent.poll() is not None:
            raise SystemExit(err.read_text())
        time.sleep(0.1)
    return agent, audit


def main(trials: int = 200, userspace_only: bool = False) -> int:
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 3
    work = Path(tempfile.mkdtemp(prefix="enforcer-bench-ik-"))
    for in_kernel in (False,) if userspace_only else (True, False):
        launcher = Launcher(work)
        agent, audit = start(work, launcher, in_kernel)
        clock = None
        try:
            results = [launcher.run("cat", "/etc/shadow") for _ in range(trials)]
            slow = []
            if not in_kernel:
                clock = ExitClock()
                for _ in range(trials):
                    slow.append(launcher.run(*SLOW_READER))
        finally:
            stop(agent)
            launcher.close()
        zero = sum(1 for code, size in results if size == 0 and code == -9)
        mode = "in-kernel" if in_kernel else "userspace"
        print(f"{mode} kill: cat /etc/shadow read zero bytes and died of SIGKILL in "
              f"{zero}/{trials} trials ({100 * zero / trials:.1f} %)", flush=True)
        if clock is not None:
            records = map(json.loads, audit.read_text().splitlines())
            kills = kills_from_audit(
                records, clock.exits(),
                wanted=lambda rec: (rec.get("target") or {}).get("comm") != "cat")
            clock.close()
            killed = sum(1 for code, _ in slow if code == -9)
            print(report(f"live agent, userspace kill of {trials} slow readers "
                         f"({killed} died of SIGKILL)", kills), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", type=int, nargs="?", default=200)
    parser.add_argument("--userspace-only", action="store_true")
    options = parser.parse_args()
    raise SystemExit(main(options.trials, options.userspace_only))
