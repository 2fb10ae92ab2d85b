"""Benchmark: where a decided event's time goes in userspace, stage by stage, on one core,
without the kernel (records are built with decode.pack exactly as the probes lay them out).
Prints CPU microseconds per event for each stage and events/s for the whole path (CPU
time of this process, so that other tenants' load does not inflate the figures).

    .venv/bin/python tests/bench/bench_hot_path.py [--events 200000] [--profile]

Stages: ring read (records taken out of the ring buffer's memory in batches of 1024, as
enforcer.adapters.libbpf.RingReader does: a header walk and one copy per batch), decode
(bytes -> fields), state (process table lookup, live event), evaluate (the stable rules;
split into the rules' matching, field reads included, and the alerts' building: output
text and output_fields),
and the whole agent loop (batched ring read, decode, Agent._handle with a Pipeline-like
counter).
Two streams: `miss` = failed opens below a watched prefix (the kernel passes them, no rule
matches: bench_ebpf.py throughput's workload) and `match` = reads of /etc/shadow by `cat`
(every one an alert of "Read sensitive file untrusted", built and counted, no outputs).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from enforcer.adapters.libbpf import RB_HDR, committed  # noqa: E402
from enforcer.agent import Agent, build_state  # noqa: E402
from enforcer.resources import default_rules_dir  # noqa: E402
from enforcer.rules.engine import Engine  # noqa: E402
from enforcer.rules.loader import load_rules  # noqa: E402
from enforcer.sources import syscalls as sc  # noqa: E402
from enforcer.sources.decode import decode, pack  # noqa: E402

BATCH = 1024


def ring_of(record: bytes) -> tuple[memoryview, int]:
    """A ring buffer's data area holding BATCH copies of `record`, laid out as the kernel
    does (8-byte header, 8-aligned), and the position after the last."""
    one = len(record).to_bytes(4, "little") + bytes(4) + record
    one += bytes(-len(one) % 8)
    area = one * BATCH
    return memoryview(area + area), len(area)  # mapped twice, as the kernel maps it

O_RDONLY = 0
ENOENT = 2


def records(kind: str, n: int, pid: int) -> list[bytes]:
    code = sc.CODES["openat"]
    if kind == "miss":
        one = pack(code=code, tgid=pid, ret=-ENOENT, ints=(-100, O_RDONLY, 0),
                   comm="gen", path1="/etc/sudoers.d/enforcer-bench-missing")
    else:
        one = pack(code=code, tgid=pid, ret=3, ints=(-100, O_RDONLY, 0), comm="cat",
                   path1="/etc/shadow")
    return [one] * n


class Counting:
    """The part of Pipeline.evaluate the agent loop always pays: a per-type counter."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.counts: Counter[str] = Counter()

    def evaluate(self, event: Any) -> list[Any]:
        self.counts[event.get("evt.type")] += 1
        return self.engine.evaluate(event)

    def event_types(self) -> frozenset[str] | None:
        return self.engine.event_types()


def per_event(fn: Any, n: int) -> float:
    # CPU time, not wall time: on a shared box other tenants' load does not inflate it
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    n = args.events
    engine = Engine(load_rules([str(default_rules_dir())]))
    tracker = build_state()
    pid = os.getpid()
    # the process the records come from, as an exec would have made it
    tracker.table.on_exec(pid, "cat", "/usr/bin/cat", ["cat", "/etc/shadow"], 1000, 1000,
                          time.time_ns(), None)
    for kind in ("miss", "match"):
        measure(kind, n, engine, tracker, pid, args.profile)


def measure(kind: str, n: int, engine: Engine, tracker: Any, pid: int, profile: bool) -> None:
    """Print the stage costs and the whole loop's rate for one stream."""
    raws = records(kind, n, pid)
    ring, end = ring_of(raws[0])

    def read_batch() -> tuple[bytes, list[tuple[int, int]]]:
        pos, spans = committed(ring, 0, 0, end, (1 << 62) - 1, BATCH)
        return ring[:pos].tobytes(), spans

    def read_all() -> list[tuple[bytes, list[tuple[int, int]]]]:
        return [read_batch() for _ in range(n // BATCH + 1)]

    read = per_event(read_all, n)
    assert read_batch()[1][0] == (RB_HDR, len(raws[0]))
    decoded: list[Any] = []
    dec = per_event(lambda: decoded.extend(decode(r) for r in raws), n)
    events: list[Any] = []
    state = per_event(lambda: events.extend(tracker.apply(f) for f in decoded), n)
    alerts = 0

    def evaluate() -> None:
        nonlocal alerts
        for e in events:
            alerts += len(engine.evaluate(e))

    ev = per_event(evaluate, n)
    # the split, on fresh events (evaluated ones hold their fields already)
    fresh = [tracker.apply(decode(r)) for r in raws]
    hits: list[Any] = []
    matching = per_event(lambda: hits.extend(engine._match(e) for e in fresh), n)
    building = per_event(lambda: [engine.alert(i, e) for e, h in zip(fresh, hits, strict=True)
                                  for i in h], n)
    agent = Agent(Counting(engine), rules=engine.rules, stderr=open(os.devnull, "w"))  # noqa: SIM115
    agent.tracker = tracker

    def loop() -> None:
        for _ in range(n // BATCH):
            buf, spans = read_batch()
            agent._handle([decode(buf, off) for off, _size in spans])

    prof = cProfile.Profile()
    if profile:
        prof.enable()
    whole = per_event(loop, n)
    if profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)
    print(f"{kind}: ring read {read:.2f} us, decode {dec:.2f} us, state {state:.2f} us, "
          f"evaluate {ev:.2f} us ({alerts // n} alerts/event: rules {matching:.2f} us, "
          f"alert {building:.2f} us); whole loop "
          f"{whole:.2f} us/event = {1e6 / whole:,.0f} events/s")

if __name__ == "__main__":
    main()
