"""A hot reload as the operator sees it: the policy digest on each detection's trace (over
real OTLP/HTTP) and audit record, and the reload counted in Prometheus metrics from the same
audit records."""

from __future__ import annotations

from enforcer.audit.memory import MemoryAudit
from enforcer.audit.metrics_sink import MetricsAudit
from enforcer.audit.otel_sink import TracingAudit
from enforcer.audit.record import FanOut
from enforcer.audit.tracing import TracingConfig, setup_tracing
from enforcer.metrics import Metrics
from enforcer.reload import Reloader
from enforcer.respond.responder import Responder
from tests.unit.reload.configmap import ConfigMapDir

RULES = """\
- rule: Shadow read
  desc: d
  condition: evt.type = openat and fd.name = /etc/shadow
  output: shadow read by %proc.name
  priority: WARNING
"""
POLICY = """\
- policy: answer-shadow
  match: {rules: [Shadow read]}
  actions: [{kill: {signal: SIGNAL}}]
"""


def reloads(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("enforcer_policy_reloads_total",
                                             {"result": result}) or 0.0


def test_digest_on_traces_and_reloads_counted(tmp_path, otlp_receiver):
    rules, policies = ConfigMapDir(tmp_path / "rules"), ConfigMapDir(tmp_path / "policies")
    rules.write({"r.yaml": RULES})
    policies.write({"p.yaml": POLICY.replace("SIGNAL", "TERM")})
    tracer = setup_tracing(TracingConfig(endpoint=otlp_receiver.endpoint, schedule_delay_ms=50),
                           hostname="node-1", environ={"NODE_NAME": "node-1"})
    records, metrics = MemoryAudit(), Metrics()
    audit = FanOut(TracingAudit(records, tracer), MetricsAudit(metrics))
    reloader = Reloader([rules.path], [policies.path], audit=audit,
                        on_critical=lambda alert: None)
    responder = Responder(reloader.current.policies, audit, dry_run=True,
                          policy_digest=reloader.digest).start()
    reloader.on_swap = lambda new, old: responder.use_policies(new.policies, new.short_digest)
    event = {"evt.type": "openat", "fd.name": "/etc/shadow", "proc.name": "cat"}

    def detect() -> None:
        for alert in reloader.current.engine.evaluate(event):
            responder.submit(tracer.stamp(alert))
        responder.drain()

    try:
        first = reloader.digest
        detect()
        policies.write({"p.yaml": POLICY.replace("SIGNAL", "KILL")})
        assert reloader.check() == "swapped"
        second = reloader.digest
        detect()
        policies.write({"p.yaml": "- policy: [broken\n"})
        assert reloader.check() == "failed"
        detect()
    finally:
        responder.stop()
    spans = otlp_receiver.wait_for(
        lambda got: len([s for s in got if s.name == "enforcer.match"]) >= 3)
    tracer.shutdown()
    roots = sorted((s for s in spans if s.name == "enforcer.match"), key=lambda s: s.start_ns)
    assert [s.attributes["enforcer.policy_digest"] for s in roots] == [first, second, second]
    matches = [r for r in records.records if r.kind == "match"]
    assert [r.policy_digest for r in matches] == [first, second, second]
    assert (reloads(metrics, "success"), reloads(metrics, "failure")) == (1.0, 1.0)

