"""Overhead of the live agent on workloads, measured so that a noisy shared box can be trusted
(root; not collected by pytest). Prints tables.

    sudo .venv/bin/python tests/bench/bench_overhead.py overhead [--rounds 8] [--pin]
    sudo .venv/bin/python tests/bench/bench_overhead.py probes [--no-masks]
    sudo .venv/bin/python tests/bench/bench_overhead.py kernel [--rounds 8]
    sudo .venv/bin/python tests/bench/bench_overhead.py events
    sudo .venv/bin/python tests/bench/bench_overhead.py hooks [--rounds 20] [--opens 200000]

overhead: two workloads, (a) a tight open/close loop in C and (b) a build-like job (tar
extract + find + gcc of a small C file), each run without and with `enforcer --dry-run`
(bundled stable rules) running. The agent is started and stopped once per round and the
rounds alternate their order (off/on, on/off, ...), so slow drifts of the host's load
cancel; within a phase the two workloads alternate. For every run: wall time and the
workload's own CPU time (user+sys of it and its children, from wait4): the kernel-side
cost of the probes is charged to the workload's sys time, so the CPU ratio measures it
even when other tenants make wall time swing. The agent's CPU, its kernel drops and the
load average (before, per round, after) are printed too. --pin puts the workload on the
last CPU and the agent on CPU 0 (both otherwise float).

probes: loads the agent in this process with the bundled rules, turns on the kernel's
BPF run-time statistics (kernel.bpf_stats_enabled) and prints, per attached program, the
invocations and nanoseconds per invocation while the two workloads run, and a third, 1000
shell pipelines (the pipes of the fd table): what each tracepoint costs the workload per
syscall, and how many records the agent read meanwhile (whole host).

kernel: the kernel side alone, workloads pinned to the last CPU: nothing loaded / the
floor (empty programs on the same tracepoints as the agent: what any design on syscall
tracepoints costs, the programs aside) / the agent's probes with the bundled rules' filter
and no reader, alternating; workload CPU time, median and best, against none and floor.

events: the agent's userspace cost per record kind (decode, process table, rules).

hooks: what each way of hooking syscalls costs the open/close loop with an empty program
(none / slow path only / openat enter / openat exit / both / raw sys_enter / raw both):
the floor under any design on this kernel.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.conftest import agent_paths  # noqa: E402

OPEN_LOOP = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) {
        int fd = open(argv[1], O_RDONLY);
        if (fd >= 0) close(fd);
    }
    return 0;
}
"""

SMALL_C = r"""
#include <stdio.h>
static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
int main(void) { printf("%d\n", fib(20)); return 0; }
"""


@dataclass
class Workloads:
    """The two workloads, ready to run."""

    work: Path
    open_cmd: list[str]
    build_cmd: str
    n_open: int

    def items(self) -> list[tuple[str, list[str] | str]]:
        return [("open", self.open_cmd), ("build", self.build_cmd)]


# probes only: 1000 shell pipelines (pipe, fork, dup2 onto stdin/stdout, close, exec),
# what the fd table's pipes cost a build's shell recipes
PIPES = "i=0; while [ $i -lt 1000 ]; do echo x | cat >/dev/null; i=$((i+1)); done"


def prepare(n_open: int) -> Workloads:
    """Compile the open loop and pack the tarball the build-like workload extracts."""
    work = Path(tempfile.mkdtemp(prefix="enforcer-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    (work / "openloop.c").write_text(OPEN_LOOP)
    subprocess.run(["gcc", "-O2", "-o", str(work / "openloop"), str(work / "openloop.c")],
                   check=True)
    (work / "file").write_text("x")
    (work / "small.c").write_text(SMALL_C)
    tarball = work / "src.tar"
    subprocess.run(["tar", "-C", "/usr/include", "-cf", str(tarball), "linux", "asm-generic"],
                   check=True)
    build = (f"rm -rf {work}/x && mkdir {work}/x && tar -C {work}/x -xf {tarball} && "
             f"find {work}/x -type f -name '*.h' | wc -l && "
             f"gcc -O2 -o {work}/x/small {work}/small.c && {work}/x/small")
    return Workloads(work, [str(work / "openloop"), str(work / "file"), str(n_open)], build,
                     n_open)


def timed(cmd: list[str] | str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the workload and every child it waited for)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)  # the kernel adds reaped descendants' usage
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"workload failed: {cmd}")
    return wall, ru.ru_utime + ru.ru_stime


def proc_cpu(pid: int) -> float:
    """CPU seconds (user+sys) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


class RunningAgent:
    """`enforcer --dry-run` with the bundled rules, as a user starts it."""

    def __init__(self, cpu: int | None):
        # its audit log, state and snapshot dirs in a temp dir of its own, never under /var
        self.work = Path(tempfile.mkdtemp(prefix="enforcer-bench-agent-"))
        env = dict(os.environ, PYTHONPATH=str(REPO), **agent_paths(self.work))
        cmd = [sys.executable, "-m", "enforcer", "--dry-run"]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.ready = ""
        for line in self.proc.stderr:  # type: ignore[union-attr]
            if "enforcer: ready" in line:
                self.ready = line.strip()
                break
        else:
            raise SystemExit(f"the agent did not start: {self.proc.wait()}")
        self.cpu0, self.t0 = proc_cpu(self.proc.pid), time.monotonic()

    def stop(self) -> tuple[float, float, str]:
        """(agent CPU seconds, seconds, drop line) since start."""
        cpu, span = proc_cpu(self.proc.pid) - self.cpu0, time.monotonic() - self.t0
        self.proc.send_signal(signal.SIGINT)
        summary = self.proc.communicate(timeout=300)[1]
        shutil.rmtree(self.work, ignore_errors=True)
        drops = [x.strip() for x in summary.splitlines() if "event drop detected" in x]
        return cpu, span, drops[0] if drops else "no drop summary: " + summary[-300:]


def overhead(rounds: int, runs: dict[str, int], n_open: int, pin: bool) -> None:
    wl = prepare(n_open)
    ncpu = os.cpu_count() or 1
    agent_cpu = 0 if pin else None
    if pin:
        os.sched_setaffinity(0, {ncpu - 1})  # the workloads inherit it
    where = f"workload pinned to CPU {ncpu - 1}, agent to CPU 0" if pin else "unpinned"
    print(f"load average before: {load()}; {ncpu} CPUs; {where}")
    for _name, cmd in wl.items():  # warm the page cache and gcc
        timed(cmd)
    # per round and phase: the samples of each workload
    samples: dict[tuple[str, bool], list[Samples]] = {
        (name, on): [] for name, _ in wl.items() for on in (False, True)}
    agent_cpu_s = agent_span = 0.0
    drop_lines = []
    # the workloads alternate within a phase: open, build, build.., open, build...
    schedule = _interleave({name: runs[name] for name, _ in wl.items()})
    commands = dict(wl.items())

    def phase(on: bool) -> None:
        got = {name: Samples() for name in commands}
        for name in schedule:
            wall, cpu = timed(commands[name])
            got[name].wall.append(wall)
            got[name].cpu.append(cpu)
        for name, smp in got.items():
            samples[(name, on)].append(smp)

    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for on in order:
            if not on:
                phase(False)
                continue
            agent = RunningAgent(agent_cpu)
            if r == 0:
                print(agent.ready)
            time.sleep(1.0)  # past the start-up /proc scan
            agent.cpu0, agent.t0 = proc_cpu(agent.proc.pid), time.monotonic()
            phase(True)
            cpu, span, drops = agent.stop()
            agent_cpu_s += cpu
            agent_span += span
            drop_lines.append(drops)
        print(f"round {r + 1}/{rounds} ({'off,on' if order[0] is False else 'on,off'}) "
              f"done, load {load()}", flush=True)

    print(f"load average after: {load()}")
    print()
    print(f"{rounds} rounds (agent started and stopped once per round, order alternating); "
          f"per phase: {', '.join(f'{n} x {k}' for k, n in runs.items())}")
    print("cells: median [min-max] in seconds. Ratios with/without: 'median' of all runs, "
          "'best' = min/min (the noise of a shared box only adds time), 'paired' = median "
          "over rounds of the round's median ratio; last column: 95% bootstrap interval of "
          "the median ratio")
    head = (f"{'workload':<28} {'metric':<6} {'agent off':>22} {'agent on':>22} "
            f"{'median':>7} {'best':>7} {'paired':>7} {'target':>7}")
    print(head)
    print("-" * len(head))
    targets = {"open": 1.10, "build": 1.02}
    labels = {"open": f"open/close loop ({wl.n_open:,})", "build": "build (tar x+find+gcc)"}
    for name, _ in wl.items():
        off, on = samples[(name, False)], samples[(name, True)]
        for metric in ("wall", "cpu"):
            a = [x for smp in off for x in getattr(smp, metric)]
            b = [x for smp in on for x in getattr(smp, metric)]
            paired = statistics.median(
                statistics.median(getattr(y, metric)) / statistics.median(getattr(x, metric))
                for x, y in zip(off, on, strict=True))
            target = f"<={targets[name]:.2f}x" if metric == "wall" else ""
            lo, hi = _ratio_interval(a, b)
            print(f"{labels[name]:<28} {metric:<6} {_cell(a):>22} {_cell(b):>22} "
                  f"{statistics.median(b) / statistics.median(a):>6.3f}x "
                  f"{min(b) / min(a):>6.3f}x {paired:>6.3f}x {target:>7} "
                  f"[{lo:.3f}-{hi:.3f}]")
    print()
    print(f"agent CPU while measured: {agent_cpu_s:.2f}s over {agent_span:.1f}s "
          f"({100 * agent_cpu_s / agent_span:.1f}% of one core; it also sees the rest of "
          "the host)")
    print("agent kernel drops per run: " + "; ".join(
        x.replace("- event drop detected: ", "") for x in drop_lines))


def _ratio_interval(off: list[float], on: list[float], n: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of median(on)/median(off): how far the noise of this box
    lets the ratio be trusted."""
    import random  # noqa: PLC0415

    rng = random.Random(0)
    ratios = sorted(statistics.median(rng.choices(on, k=len(on)))
                    / statistics.median(rng.choices(off, k=len(off))) for _ in range(n))
    return ratios[int(0.025 * n)], ratios[int(0.975 * n) - 1]


def _interleave(counts: dict[str, int]) -> list[str]:
    """Each workload's runs spread evenly over one sequence."""
    slots = sorted((i / n, name) for name, n in counts.items() for i in range(n))
    return [name for _, name in slots]


def _cell(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} [{min(xs):.3f}-{max(xs):.3f}]"


def probes(n_open: int, masks: bool = True) -> None:
    from enforcer.agent import Agent  # noqa: PLC0415
    from enforcer.resources import default_rules_dir  # noqa: PLC0415
    from enforcer.rules.engine import Engine  # noqa: PLC0415
    from enforcer.rules.loader import load_rules  # noqa: PLC0415
    from enforcer.sources.probe import ProbeConfig  # noqa: PLC0415

    wl = prepare(n_open)
    engine = Engine(load_rules([str(default_rules_dir())]))
    config = ProbeConfig(agent_tgid=os.getpid(), quiet_masks=masks)
    agent = Agent(engine, rules=engine.rules, probe_config=config,
                  stderr=open(os.devnull, "w"))  # noqa: SIM115
    agent.open()
    stop = threading.Event()
    t = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    t.start()
    agent.started.wait()
    bpf = agent.source._probe.bpf  # type: ignore[union-attr]
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    was = stats.read_text().strip()
    stats.write_text("1")
    try:
        for name, cmd in [*wl.items(), ("pipes", PIPES)]:
            before = _prog_stats(bpf)
            events0, records0, quiet0 = agent.events, agent.records, agent.quiet_dropped()
            wall, cpu = timed(cmd)
            time.sleep(0.3)
            after = _prog_stats(bpf)
            print(f"\n{name}: wall {wall:.3f}s, workload CPU {cpu:.3f}s, "
                  f"{agent.records - records0} records read, "
                  f"{agent.events - events0} events reached the rules, "
                  f"{agent.quiet_dropped() - quiet0} dropped by the detection masks "
                  f"(whole host; masks {'on' if masks else 'off'})")
            print(f"{'program':<34} {'runs':>10} {'ns/run':>8} {'total ms':>9}")
            total = 0
            for prog in sorted(after, key=lambda p: before.get(p, (0, 0))[1] - after[p][1]):
                runs = after[prog][0] - before.get(prog, (0, 0))[0]
                ns = after[prog][1] - before.get(prog, (0, 0))[1]
                total += ns
                if runs:
                    print(f"{prog:<34} {runs:>10} {ns / runs:>8.0f} {ns / 1e6:>9.1f}")
            print(f"{'all programs (whole host)':<34} {'':>10} {'':>8} {total / 1e6:>9.1f}")
    finally:
        stats.write_text(was)
        stop.set()
        t.join(30)
        agent.close()


def empty_programs(syscalls: tuple[str, ...]) -> str:
    """Programs that return at once, on the tracepoints the agent attaches for these
    syscalls (the exit of each, the enter too for exec, the two sched ones and the TCP
    state one): the floor."""
    lines = [f"TRACEPOINT_PROBE(syscalls, sys_{side}_{name}) {{ return 0; }}"
             for name in syscalls for side in ("enter", "exit")
             if side == "exit" or name.startswith("exec")]
    lines += [f"TRACEPOINT_PROBE(sched, sched_process_{x}) {{ return 0; }}"
              for x in ("fork", "exit")]
    # the connect's local end (bpf/events.c): fires on TCP state changes only
    lines.append("TRACEPOINT_PROBE(sock, inet_sock_set_state) { return 0; }")
    return "\n".join(lines) + "\n"


FLOOR = "floor"
PAIR = "probes, pair"


def kernel(rounds: int, runs: int, n_open: int) -> None:
    """Kernel side alone, three states alternating: nothing loaded; the floor (empty
    programs on the very tracepoints the agent attaches: what any design on syscall
    tracepoints pays, since attaching one puts every syscall of every task on the slow
    path); the agent's probes with the bundled rules' filter, nobody reading. Workload CPU
    time."""
    from bcc import BPF  # noqa: PLC0415 - bench only

    from enforcer.agent import Agent  # noqa: PLC0415
    from enforcer.resources import default_rules_dir  # noqa: PLC0415
    from enforcer.rules.engine import Engine  # noqa: PLC0415
    from enforcer.rules.loader import load_rules  # noqa: PLC0415
    from enforcer.sources.ebpf import available_syscalls, plan  # noqa: PLC0415
    from enforcer.sources.probe import ProbeConfig  # noqa: PLC0415

    wl = prepare(n_open)
    engine = Engine(load_rules([str(default_rules_dir())]))
    attached = plan(engine.event_types(), available_syscalls(), ProbeConfig())[0].syscalls
    floor_text = empty_programs(attached)
    os.sched_setaffinity(0, {(os.cpu_count() or 1) - 1})  # the workloads inherit it
    print(f"load average before: {load()}; workloads pinned to CPU {(os.cpu_count() or 1) - 1}")
    print(f"tracepoints: {len(attached)} syscalls at exit (exec at enter too) + sched "
          f"fork/exit ({', '.join(attached)})")
    states = ("none", FLOOR, "agent probes", PAIR)
    got = {(name, st): Samples() for name, _ in wl.items() for st in states}
    for r in range(rounds):
        for st in states if r % 2 == 0 else tuple(reversed(states)):
            agent = empty = None
            if st in ("agent probes", PAIR):
                config = ProbeConfig(agent_tgid=os.getpid(), args_at_exit=st != PAIR)
                agent = Agent(engine, rules=engine.rules, probe_config=config,
                              stderr=open(os.devnull, "w"))  # noqa: SIM115
                agent.open()
            elif st == FLOOR:
                empty = BPF(text=floor_text)
            for _ in range(runs):
                for name, cmd in wl.items():
                    wall, cpu = timed(cmd)
                    got[(name, st)].wall.append(wall)
                    got[(name, st)].cpu.append(cpu)
            if agent is not None:
                agent.close()
            if empty is not None:
                empty.cleanup()
        print(f"round {r + 1}/{rounds} done, load {load()}", flush=True)
    print(f"load average after: {load()}")
    print(f"\n{rounds} rounds x {runs} runs per state, order alternating; workload CPU s "
          "(user+sys), median [min-max]; ratios: median/median, best = min/min")
    print("floor = empty programs on the same tracepoints: no design on syscall tracepoints "
          "can cost less; 'agent probes' over 'floor' is what our programs add; "
          f"'{PAIR}' = the probes with syscalls watched at enter and exit (the fallback "
          "for kernels without bpf_task_pt_regs)")
    print(f"{'workload':<10} {'state':<13} {'CPU s':>22} {'vs none':>7} {'best':>7} "
          f"{'vs floor':>8} {'best':>7}")
    for name, _ in wl.items():
        base = got[(name, "none")].cpu
        floor = got[(name, FLOOR)].cpu
        for st in states:
            xs = got[(name, st)].cpu
            print(f"{name:<10} {st:<13} {_cell(xs):>22} "
                  f"{statistics.median(xs) / statistics.median(base):>6.3f}x "
                  f"{min(xs) / min(base):>6.3f}x "
                  f"{statistics.median(xs) / statistics.median(floor):>7.3f}x "
                  f"{min(xs) / min(floor):>6.3f}x")


HOOKS_C = """
int tp1(void *ctx) { return 0; }
int tp2(void *ctx) { return 0; }
int raw1(void *ctx) { return 0; }
int raw2(void *ctx) { return 0; }
"""

# state -> [(kind, attach point)]: kind "tp" is a syscall tracepoint (perf), "raw" a raw one
HOOK_STATES: dict[str, list[tuple[str, str]]] = {
    "none": [],
    "slow path only": [("tp", "syscalls:sys_enter_mkdir")],
    "openat enter": [("tp", "syscalls:sys_enter_openat")],
    "openat exit": [("tp", "syscalls:sys_exit_openat")],
    "openat enter+exit": [("tp", "syscalls:sys_enter_openat"),
                          ("tp", "syscalls:sys_exit_openat")],
    "raw sys_enter": [("raw", "sys_enter")],
    "raw sys_enter+exit": [("raw", "sys_enter"), ("raw", "sys_exit")],
}


def hooks(reps: int, n_open: int) -> None:
    """What each way of hooking syscalls costs the open/close loop before a program does
    anything: one empty program, attached and detached around every run (no recompile),
    states interleaved, workload pinned to the last CPU. 'slow path only' has a program on
    a syscall the loop never makes: attaching any syscall tracepoint puts every syscall of
    every task on the kernel's slow path. 'openat exit' is the least any design that sees
    each open's path and result can cost with tracepoints."""
    from bcc import BPF  # noqa: PLC0415 - bench only

    wl = prepare(n_open)
    os.sched_setaffinity(0, {(os.cpu_count() or 1) - 1})
    bpf = BPF(text=HOOKS_C)
    def toggle(points: list[tuple[str, str]], on: bool) -> None:
        for i, (kind, point) in enumerate(points):
            fn = f"{kind}{i + 1}"  # a program is loaded as one type: tracepoint or raw
            if kind == "tp":
                (bpf.attach_tracepoint(tp=point, fn_name=fn) if on
                 else bpf.detach_tracepoint(point))
            else:
                (bpf.attach_raw_tracepoint(tp=point, fn_name=fn) if on
                 else bpf.detach_raw_tracepoint(point))

    got: dict[str, list[float]] = {st: [] for st in HOOK_STATES}
    print(f"load average before: {load()}; {reps} runs per state of {n_open:,} open+close",
          flush=True)
    for r in range(reps):
        for st in list(HOOK_STATES) if r % 2 == 0 else list(reversed(HOOK_STATES)):
            toggle(HOOK_STATES[st], True)
            got[st].append(timed(wl.open_cmd)[1])
            toggle(HOOK_STATES[st], False)
    print(f"load average after: {load()}")
    base = got["none"]
    print(f"{'state':<20} {'CPU s':>22} {'vs none':>8} {'best':>7} {'paired':>7} {'ns/iter':>8}")
    for st, xs in got.items():
        paired = statistics.median(x / y for x, y in zip(xs, base, strict=True))
        extra = (statistics.median(xs) - statistics.median(base)) / n_open * 1e9
        print(f"{st:<20} {_cell(xs):>22} {statistics.median(xs) / statistics.median(base):>7.3f}x "
              f"{min(xs) / min(base):>6.3f}x {paired:>6.3f}x {extra:>8.0f}")


def events(n: int) -> None:
    """Userspace cost per record kind in the agent: decode + state + rules, in-process."""
    from enforcer.agent import build_state  # noqa: PLC0415
    from enforcer.resources import default_rules_dir  # noqa: PLC0415
    from enforcer.rules.engine import Engine  # noqa: PLC0415
    from enforcer.rules.loader import load_rules  # noqa: PLC0415
    from enforcer.sources import syscalls as sc  # noqa: PLC0415
    from enforcer.sources.decode import decode, pack  # noqa: PLC0415

    engine = Engine(load_rules([str(default_rules_dir())]))
    tracker = build_state()
    live = subprocess.Popen(["sleep", "600"])  # a real process for exec's /proc reads
    me = os.getpid()
    kinds = {
        "fork": pack(code=sc.EV_FORK, tgid=me, ints=(live.pid, me)),
        "exec (sleep, /proc read)": pack(code=sc.CODES["execve"], tgid=live.pid,
                                         path1="/usr/bin/sleep", argv=("sleep", "600"),
                                         comm="sleep", cgroup_id=_cgroup_id(live.pid)),
        "procexit": pack(code=sc.EV_EXIT, tgid=live.pid, comm="sleep"),
        "openat, watched path": pack(code=sc.CODES["openat"], tgid=me, ret=-2,
                                     ints=(0xFFFFFF9C, 0, 0, 0), comm="gen",
                                     path1="/etc/sudoers.d/enforcer-missing"),
        "openat, relative read": pack(code=sc.CODES["openat"], tgid=me, ret=3,
                                      ints=(0xFFFFFF9C, 0, 0, 0), comm="gen",
                                      path1="include/linux/types.h"),
    }
    print(f"{'record':<28} {'us each':>8}  (decode + process table + {len(engine.rules)} rules)")
    try:
        for kind, raw in kinds.items():
            for _ in range(50):
                ev = tracker.apply(decode(raw))
                if ev is not None:
                    engine.evaluate(ev)
            t0 = time.perf_counter()
            for _ in range(n):
                ev = tracker.apply(decode(raw))
                if ev is not None:
                    engine.evaluate(ev)
            print(f"{kind:<28} {(time.perf_counter() - t0) / n * 1e6:>8.1f}")
    finally:
        live.kill()
        live.wait()


def _cgroup_id(pid: int) -> int:
    """The cgroup v2 id the kernel stamps on this process's records (0 if unknown)."""
    from enforcer.state.cgroup_ids import cgroup2_mount  # noqa: PLC0415

    mount = cgroup2_mount()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::") and mount:
            return os.stat(mount + line[3:].rstrip("/")).st_ino
    return 0


def _prog_stats(bpf: object) -> dict[str, tuple[int, int]]:
    """{program: (run count, run ns)} from the programs' fdinfo."""
    out = {}
    for name, fn in bpf.funcs.items():  # type: ignore[attr-defined]
        info = {}
        for line in Path(f"/proc/self/fdinfo/{fn.fd}").read_text().splitlines():
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
        text = name.decode() if isinstance(name, bytes) else name  # libbpf: str names
        short = text.replace("tracepoint__", "").replace("syscalls__sys_", "")
        out[short] = (int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["overhead", "probes", "kernel", "events", "hooks"])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--open-runs", type=int, default=3, help="open loops per phase")
    p.add_argument("--build-runs", type=int, default=8, help="builds per phase")
    p.add_argument("--opens", type=int, default=500_000)
    p.add_argument("--pin", action="store_true", help="workload on the last CPU, agent on 0")
    p.add_argument("--no-masks", action="store_true",
                   help="probes: without the per-process detection masks (to compare)")
    a = p.parse_args()
    if a.what == "overhead":
        overhead(a.rounds, {"open": a.open_runs, "build": a.build_runs}, a.opens, a.pin)
    elif a.what == "events":
        events(2000)
    elif a.what == "kernel":
        kernel(a.rounds, a.open_runs, a.opens)
    elif a.what == "hooks":
        hooks(a.rounds, a.opens)
    else:
        probes(a.opens, masks=not a.no_masks)


if __name__ == "__main__":
    main()
