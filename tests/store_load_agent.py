"""A stand-in agent for the cluster store's load tests: the real audit path of the live agent
(`audit_chain`: the JSONL audit log first, then the store; alerts through `submit_alert` as
`Pipeline.publish` does them) with the real PostgreSQL writer, fed by a synthetic detection
source at a fixed rate instead of eBPF (which would need root and a real workload per node).

    python -m tests.store_load_agent --node NODE --store DSN --audit-log FILE --spool FILE \
        --rate 1000 --duration 25

Each detection is one alert and three responder records (match, decision, dry-run action),
so --rate records/s is rate/4 detections/s. When the source stops it waits (up to
--drain-timeout) for the backlog to reach the database, then prints one JSON line of figures:
records made, written, dropped, the largest backlog seen, and the process's CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time

from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit
from enforcer.audit.record import ACTION, DECISION, MATCH, AuditRecord, new_match_id
from enforcer.pipeline import audit_chain
from enforcer.priority import Priority
from enforcer.store.postgres.writer import PgStoreWriter

RULES = ("Terminal shell in container", "Read sensitive file untrusted",
         "Outbound connection to C2 server")
PER_DETECTION = 4


def _detection(node: str, n: int, audit, writer) -> None:
    now = time.time_ns()
    rule = RULES[n % len(RULES)]
    pod = f"web-{n % 7}"
    fields = {"k8s.node.name": node, "k8s.ns.name": "prod", "k8s.pod.name": pod,
              "proc.pid": 10_000 + n % 50_000, "proc.name": "bash", "proc.cmdline": "bash -i",
              "load.seq": n}
    alert = Alert(rule=rule, priority=Priority.NOTICE, output=f"{rule} (pod={pod} seq={n})",
                  output_fields=fields, time_ns=now, tags=("container",), hostname=node)
    match_id = new_match_id()
    common = {"match_id": match_id, "rule": rule, "priority": "Notice", "event_time_ns": now}
    audit.record(AuditRecord(kind=MATCH, outcome="matched", **common))
    audit.record(AuditRecord(kind=DECISION, outcome="act", policy="contain-shell",
                             dry_run=True, **common))
    audit.record(AuditRecord(kind=ACTION, outcome="dry-run", policy="contain-shell",
                             action="kill", index=0, dry_run=True,
                             target={"pid": fields["proc.pid"], "pod": pod, "node": node},
                             render={"signal": "SIGKILL", "pid": fields["proc.pid"]}, **common))
    writer.submit_alert(alert)  # as Pipeline.publish does, after the responder has it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--audit-log", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--rate", type=float, default=1000.0, help="records per second")
    parser.add_argument("--duration", type=float, default=25.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    writer = PgStoreWriter(args.store, args.node, args.spool, retry_s=0.5,
                           connect_timeout_s=2, statement_timeout_s=10)
    audit = audit_chain(JsonlAudit(args.audit_log), writer)
    max_backlog = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal max_backlog
        while not stop.wait(0.2):
            max_backlog = max(max_backlog, writer.backlog)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    print(json.dumps({"ready": args.node}), flush=True)
    detections = int(args.rate * args.duration / PER_DETECTION)
    interval = PER_DETECTION / args.rate
    start = time.monotonic()
    for n in range(detections):
        # Paced against the start, not per sleep: the rate holds however slow one step is.
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        _detection(args.node, n, audit, writer)
    made_s = time.monotonic() - start
    cpu_made = resource.getrusage(resource.RUSAGE_SELF)
    deadline = time.monotonic() + args.drain_timeout
    while writer.backlog and time.monotonic() < deadline:
        time.sleep(0.1)
    writer.flush(timeout=10)
    stop.set()
    drained = writer.backlog == 0
    audit.close()
    writer.close()
    print(json.dumps({
        "node": args.node, "detections": detections, "records": detections * PER_DETECTION,
        "seconds": round(made_s, 2), "written": writer.written, "dropped": writer.dropped,
        "refused_by_spool": writer.spool.refused, "rejected": writer.rejected,
        "max_backlog": max_backlog, "drained": drained,
        "cpu_s": round(cpu_made.ru_utime + cpu_made.ru_stime, 2)}), flush=True)
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(main())
