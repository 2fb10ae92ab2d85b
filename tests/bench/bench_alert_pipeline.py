"""Benchmark: what each alert costs the detection thread after the rule matched — trace id
stamp, counters, queueing for three outputs (stdout-like, webhook, program stand-ins that
take their time on their own threads) — and the cost of turning the responder's audit
records into spans. Prints microseconds per alert (p50/p99) and records/s.

Run: /work/main/.venv/bin/python tests/bench/bench_alert_pipeline.py [--alerts N]
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from enforcer.alert import Alert  # noqa: E402
from enforcer.alert_pipeline import AlertPipeline  # noqa: E402
from enforcer.audit.otel_sink import TracingAudit  # noqa: E402
from enforcer.audit.record import AuditRecord  # noqa: E402
from enforcer.audit.tracing import TracingConfig, setup_tracing  # noqa: E402
from enforcer.metrics import Metrics  # noqa: E402
from enforcer.outputs.dispatcher import Dispatcher, OutputSpec, as_output  # noqa: E402
from enforcer.priority import Priority  # noqa: E402


class NullSink:
    def record(self, rec: AuditRecord) -> None:
        pass

    def close(self) -> None:
        pass


def alert(i: int) -> Alert:
    fields = {"proc.name": "bash", "proc.pid": 1000 + i, "container.id": "1e579f838ea3",
              "k8s.ns.name": "prod", "k8s.pod.name": f"web-{i % 50}", "evt.type": "execve",
              "proc.cmdline": "bash -i", "user.name": "root", "fd.name": "/etc/shadow"}
    return Alert(rule="Terminal shell in container", priority=Priority.NOTICE,
                 output="A shell was spawned in a container with an attached terminal",
                 output_fields=fields, time_ns=time.time_ns(), tags=("container", "shell"),
                 hostname="node-a", event=fields)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=20_000)
    n = parser.parse_args().alerts

    # Exporting to a port where nothing listens: the worst case for the batch processor.
    tracer = setup_tracing(TracingConfig(endpoint="http://127.0.0.1:9", timeout=1),
                           environ={})
    metrics = Metrics()
    slow = [as_output(name, lambda a: time.sleep(0.001)) for name in ("stdout", "webhook",
                                                                       "program")]
    dispatcher = Dispatcher([OutputSpec(o, queue_size=1000) for o in slow],
                            extra_fields={"environment": "production"},
                            metrics=metrics).start()
    pipeline = AlertPipeline(dispatcher, tracer, metrics)

    costs = []
    alerts = [alert(i) for i in range(n)]
    for a in alerts:
        t0 = time.perf_counter_ns()
        pipeline.emit(a)
        costs.append(time.perf_counter_ns() - t0)
    costs.sort()
    print(f"detection thread, per alert ({n} alerts, 3 outputs, 1 ms each on their own "
          f"threads): p50 {costs[n // 2] / 1000:.1f} us, p99 {costs[n * 99 // 100] / 1000:.1f}"
          f" us, mean {statistics.fmean(costs) / 1000:.1f} us")
    drops = {k: v.dropped for k, v in dispatcher.stats().items()}
    print(f"output drops (queues of 1000, outputs slower than the stream): {drops}")

    audit = TracingAudit(NullSink(), tracer)
    stamped = [tracer.stamp(a) for a in alerts]
    t0 = time.perf_counter()
    for i, a in enumerate(stamped):
        base = dict(match_id=f"m{i}", rule=a.rule, priority="Notice", trace_id=a.trace_id,
                    event_time_ns=a.time_ns)
        audit.record(AuditRecord(kind="match", outcome="matched",
                                 detail={"policies": ["p"]}, **base))
        audit.record(AuditRecord(kind="decision", outcome="act", policy="p", dry_run=True,
                                 detail={"actions": ["label_pod", "delete_pod"]}, **base))
        for j, action in enumerate(("label_pod", "delete_pod")):
            audit.record(AuditRecord(kind="action", outcome="dry-run", policy="p",
                                     action=action, index=j, dry_run=True,
                                     target={"namespace": "prod", "pod": "web"},
                                     duration_ns=1000, **base))
    handed = time.perf_counter() - t0
    audit.flush(timeout=600)
    elapsed = time.perf_counter() - t0
    print(f"audit records handed over on the responder's thread: {handed / n * 1e6:.1f} us "
          f"per two-action detection (4 records)")
    built = 4 * n - audit.span_drops
    print(f"spans built on their own thread: {built / elapsed:,.0f} records/s; "
          f"{audit.span_drops} of {4 * n} records had no span (queue of 10000 overflowed by "
          "this burst; every record was still written)")
    pipeline.close(timeout=1)
    tracer.shutdown(timeout_s=1)


if __name__ == "__main__":
    main()
