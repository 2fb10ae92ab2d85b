"""Benchmark: replay a mixed stream of events through the full stable Falco ruleset,
in-process, on one core, and print events/s.

Run: /work/main/.venv/bin/python tests/bench/bench_rules.py [--events N] [--rules FILE...]
[--rule-matching first|all] (or `make bench`). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from enforcer.rules.engine import Engine  # noqa: E402
from enforcer.rules.loader import load_rules  # noqa: E402

STABLE = REPO / "tests" / "data" / "falco-rules" / "falco_rules.yaml"

PROCS = ["nginx", "python3", "java", "node", "cat", "ls", "bash", "sh", "sshd", "curl",
         "postgres", "redis-server", "containerd", "kubelet", "runc"]
PATHS = ["/etc/hosts", "/etc/resolv.conf", "/usr/lib/x86_64-linux-gnu/libc.so.6",
         "/proc/self/status", "/var/log/app.log", "/tmp/data.bin", "/home/user/.bashrc",
         "/etc/shadow", "/etc/passwd", "/usr/bin/python3", "/etc/ssl/certs/ca.pem",
         "/dev/null", "/var/lib/postgresql/data/base/1", "/root/.ssh/id_rsa",
         "/etc/ld.so.cache", "/sys/fs/cgroup/memory.max"]


def make_events(n: int, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        proc = rnd.choice(PROCS)
        container = rnd.choice(["host", "host", "3ad7c1b2e4f5", "9c1e0d2a7b6f"])
        base = {
            "evt.num": i, "evt.dir": "<", "evt.rawtime": 1_700_000_000_000_000_000 + i,
            "proc.name": proc, "proc.exepath": f"/usr/bin/{proc}", "proc.exe": proc,
            "proc.cmdline": f"{proc} --flag {i % 10}", "proc.pname": rnd.choice(PROCS),
            "proc.aname": [rnd.choice(PROCS), "containerd-shim", "systemd"],
            "proc.pid": 1000 + i % 5000, "proc.tty": rnd.choice([0, 0, 0, 34816]),
            "user.name": rnd.choice(["root", "www-data", "postgres"]),
            "user.uid": rnd.choice([0, 33, 999]), "user.loginuid": -1,
            "container.id": container,
            "container.image.repository": "docker.io/library/app" if container != "host"
            else None,
        }
        kind = rnd.random()
        if kind < 0.55:
            path = rnd.choice(PATHS)
            write = rnd.random() < 0.2
            base.update({
                "evt.type": rnd.choice(["openat", "openat", "open", "openat2"]),
                "fd.name": path, "fd.directory": path.rsplit("/", 1)[0] or "/",
                "fd.filename": path.rsplit("/", 1)[1], "fd.typechar": "f", "fd.num": 5,
                "fd.type": "file", "evt.is_open_read": not write, "evt.is_open_write": write,
                "evt.arg.flags": "O_WRONLY|O_CREAT" if write else "O_RDONLY", "evt.res":
                "SUCCESS", "evt.rawres": 5,
            })
        elif kind < 0.75:
            exe = rnd.choice(PROCS)
            base.update({
                "evt.type": "execve", "proc.name": exe, "proc.exepath": f"/usr/bin/{exe}",
                "evt.arg.flags": "", "proc.is_exe_upper_layer": rnd.random() < 0.05,
                "proc.is_exe_from_memfd": False, "proc.vpid": 1 if rnd.random() < 0.01
                else 42, "evt.res": "SUCCESS", "evt.rawres": 0,
            })
        elif kind < 0.88:
            base.update({
                "evt.type": "connect", "fd.typechar": "4", "fd.type": "ipv4",
                "fd.sip": rnd.choice(["10.0.0.5", "93.184.216.34", "172.16.1.2"]),
                "fd.sport": rnd.choice([443, 80, 5432, 4444]), "fd.l4proto": "tcp",
                "fd.name": "10.0.0.1:43210->10.0.0.5:443", "evt.rawres": 0,
                "fd.sockfamily": "ip", "fd.num": 7,
            })
        elif kind < 0.95:
            base.update({"evt.type": rnd.choice(["read", "write", "close", "mmap"]),
                         "fd.num": 3, "fd.name": rnd.choice(PATHS)})
        else:
            base.update({"evt.type": rnd.choice(["setuid", "ptrace", "unlinkat", "dup2"]),
                         "evt.arg.uid": "0", "evt.arg.request": "PTRACE_ATTACH",
                         "fd.name": rnd.choice(PATHS), "evt.rawres": 0})
        events.append({k: v for k, v in base.items() if v is not None})
    return events


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rules", nargs="+", default=[str(STABLE)])
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    ap.add_argument("--rule-matching", choices=("all", "first"), default="all")
    args = ap.parse_args()

    t0 = time.perf_counter()
    ruleset = load_rules(args.rules)
    engine = Engine(ruleset, hostname="bench", rule_matching=args.rule_matching)
    t_load = time.perf_counter() - t0
    events = make_events(args.events)
    types = {e["evt.type"] for e in events}
    best = best_cpu = None
    alerts = 0
    for _ in range(args.repeat):
        alerts = 0
        evaluate = engine.evaluate
        t, c = time.perf_counter(), time.process_time()
        for ev in events:
            alerts += len(evaluate(ev))
        elapsed, cpu = time.perf_counter() - t, time.process_time() - c
        best = elapsed if best is None else min(best, elapsed)
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
    counts = ruleset.counts()
    print(f"rules: {counts['enabled']} enabled of {counts['rules']} "
          f"(load+compile {t_load * 1000:.0f} ms)")
    print(f"events: {len(events)} of {len(types)} types; alerts: {alerts} "
          f"({alerts / len(events):.2%} of events)")
    print(f"best of {args.repeat}: {best:.3f} s wall, {best_cpu:.3f} s CPU -> "
          f"{len(events) / best:,.0f} events/s wall, {len(events) / best_cpu:,.0f} events/s "
          "per CPU-second (one thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
