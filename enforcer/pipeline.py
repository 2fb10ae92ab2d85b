"""Everything that happens to an alert after a rule fires, for either source (the eBPF agent
or the falco-http input), wired once:

    event ─► active set (engine + policies + digest, swapped atomically by hot reload)
          ─► alert ─► trace id (OpenTelemetry) ─► responder (policies of the same set)
                    ─► outputs (dispatcher: stdout, file, webhook, program; never blocking)
                    ─► metrics, audit store
    responder ─► audit: JSONL (durable, first) ─► spans, metrics, store

`Pipeline.evaluate(event)` is what the eBPF agent calls as its engine: it reads the active
set once per event, so an event is judged by one set's rules *and* answered by that same
set's policies. `Pipeline.accept(alert)` takes an alert from elsewhere (falco-http).
The HTTP server (metrics, probes, console) and the reloader run on their own threads.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from enforcer.alert import Alert
from enforcer.audit.record import K8S_EVENT, RELOAD, FanOut
from enforcer.audit.tracing import Tracer
from enforcer.gitops.bundle import Bundle
from enforcer.health import POLICIES_LOADED, PROBES_ATTACHED, Readiness
from enforcer.metrics import Metrics
from enforcer.outputs.escape import escape_control
from enforcer.priority import Priority
from enforcer.reload import Reloader
from enforcer.respond.responder import Responder

if TYPE_CHECKING:  # built by the CLI layer and handed in
    from enforcer.cli.observe_args import Observability


class LineOutput:
    """stdout or a file as a dispatcher output: one line per alert, flushed per alert (a
    reader of a pipe sees each alert when it happens)."""

    def __init__(self, name: str, stream: TextIO, fmt: str, owned: bool = False,
                 shape: Any = None):
        """`shape`: an enforcer.outputs.formats.AlertShape (None: Falco's default)."""
        self.name = name
        self.stream = stream
        self.fmt = fmt
        self.owned = owned
        self.shape = shape

    def emit(self, alert: Alert) -> None:
        from enforcer.outputs.formats import FALCO_DEFAULT_SHAPE, format_alert  # noqa: PLC0415

        line = format_alert(alert, self.fmt, self.shape or FALCO_DEFAULT_SHAPE)
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        try:
            self.stream.flush()
            if self.owned:
                self.stream.close()
        except (OSError, ValueError):
            pass


RESTART_NEEDED_RULE = "Enforcer reload needs a restart"
# What a received alert with a rule name the agent does not know is counted under.
UNKNOWN_RULE_LABEL = "(other)"


@dataclass
class Pipeline:
    """The agent's post-detection wiring around observe's Observability (metrics,
    readiness, tracer, outputs, audit sink). Built by enforcer.cli.agent_wiring."""

    reloader: Reloader
    responder: Responder
    obs: Observability
    audit: Any                              # what the responder and reloader write to
    store: Any = None                       # enforcer.store.writer.StoreWriter
    events: Any = None                      # enforcer.respond.kube_events.KubeEvents
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    # Called (on the reloader's thread) with a new set: what the probes cannot see of it
    # (enforcer.kernel.coverage.coverage_gaps), said loudly since a restart is needed.
    on_rules_changed: Callable[[Bundle], list[str]] | None = None

    def __post_init__(self) -> None:
        self.active: Bundle = self.reloader.current
        self.metrics: Metrics = self.obs.metrics
        self.readiness: Readiness = self.obs.readiness
        self.tracer: Tracer = self.obs.tracer
        self.event_counts = self.metrics.event_counts
        self._named_rules: tuple[Any, dict[str, bool]] = (None, {})

    @property
    def http(self) -> Any:
        return self.obs.http

    # -- the rules engine, as the agent sees it ----------------------------------------------

    def evaluate(self, event: Any) -> list[Alert]:
        """Judge one live event with the active set; alerts come back stamped with their
        trace id and already handed to the responder with that same set's policies."""
        active = self.active  # one read: rules and policies of the same set
        self.event_counts[event.get("evt.type")] += 1
        alerts = active.engine.evaluate(event)
        if not alerts:
            return alerts
        return [self._decide(alert, active) for alert in alerts]

    def event_types(self) -> frozenset[str] | None:
        return self.active.engine.event_types()

    @property
    def rules(self) -> Any:
        return self.active.engine.rules

    # -- alerts --------------------------------------------------------------------------

    def _decide(self, alert: Alert, active: Bundle) -> Alert:
        alert = self.tracer.stamp(alert)
        matched = self.responder.submit(alert, active=(active.policies, active.short_digest))
        if not matched and self.tracer.enabled:
            # A detection no policy answers still gets its (one-span) trace.
            trace = self.tracer.begin(alert)
            trace.set_attribute("enforcer.policy_digest", active.short_digest)
            trace.end(matched_policies=0)
        return alert

    def publish(self, alert: Alert) -> None:
        """Count, output and store an alert that has been decided (never blocks)."""
        self.obs.pipeline.emit(alert)
        if self.store is not None:
            self.store.submit_alert(alert)

    def rule_label(self, rule: str) -> str:
        """`rule` when the active set knows it (a loaded rule, or one a policy names), else
        UNKNOWN_RULE_LABEL: received alerts are counted under a bounded set of names."""
        active = self.active
        if active.ruleset is not None and rule in active.ruleset.rules:
            return rule
        known = self._named_rules
        if known[0] is not active:
            known = self._named_rules = (active, {})
        found = known[1].get(rule)
        if found is None:
            found = any(p.match.names_rule(rule) for p in active.policies.policies)
            if len(known[1]) < 4096:  # a cache, bounded like the labels it guards
                known[1][rule] = found
        return rule if found else UNKNOWN_RULE_LABEL

    def accept(self, alert: Alert) -> None:
        """An alert from outside (falco-http): decide with the active set, publish."""
        self.publish(self._decide(alert, self.active))

    def critical(self, alert: Alert) -> None:
        """The agent's own critical alerts (budget breaker, refused reload): to every output
        and, as a log line, to stderr."""
        self.stderr.write(f"enforcer: {escape_control(alert.text_line)}\n")
        self.stderr.flush()
        self.obs.dispatcher.dispatch(alert)
        self.metrics.rule_matched(alert.rule, alert.priority.display, alert.source, alert.tags)

    # -- hot reload ----------------------------------------------------------------------

    def swap(self, new: Bundle, old: Bundle) -> None:
        """The reloader's hook: the responder gets the new policies' rate limits first,
        then one assignment makes the new set the one events are judged by."""
        self.responder.use_policies(new.policies, new.short_digest)
        self.active = new
        self.readiness.set(POLICIES_LOADED, True, f"digest {new.short_digest}")
        gaps = self.on_rules_changed(new) if self.on_rules_changed is not None else []
        if not gaps:
            self.readiness.warn("attachment", None)
            return
        message = (f"the reloaded rules (digest {new.short_digest}) need what the probes "
                   f"attached at start do not see ({'; '.join(gaps)}): restart the agent "
                   "for those rules to fire")
        self.readiness.warn("attachment", message)
        self.critical(Alert(rule=RESTART_NEEDED_RULE, priority=Priority.CRITICAL,
                            output=message, output_fields={"reload.digest": new.short_digest,
                                                           "reload.gaps": gaps},
                            time_ns=time.time_ns(), source="enforcer", tags=("enforcer",),
                            hostname=hostname()))

    # -- lifecycle -----------------------------------------------------------------------

    def mark_attached(self, detail: str) -> None:
        self.readiness.set(PROBES_ATTACHED, True, detail)

    def start(self) -> None:
        """Output workers, responder, reloader (the HTTP server is started before)."""
        self.readiness.set(POLICIES_LOADED, True, f"digest {self.active.short_digest}")
        self.obs.start()
        if self.events is not None:
            self.events.start()
        self.responder.start()
        if self.reloader.interval > 0:
            self.reloader.start()

    def stop(self) -> None:
        """Stop watching, finish queued responses, then end traces, close the audit log and
        the store, deliver queued alerts and spans (bounded), stop the HTTP server."""
        self.reloader.stop()
        self.responder.stop()
        if self.events is not None:
            self.events.stop()
        if self.store is not None:
            self.store.close()
        self.obs.close()

    def summary(self) -> str:
        """Falco's alert summary, responses by action and outcome, output drops."""
        return self.obs.summary(self.responder)


def hostname() -> str:
    return os.environ.get("HOSTNAME") or socket.gethostname()


def audit_chain(obs_sink: Any, store: Any) -> Any:
    """The responder's audit sink: observe's (rotated JSONL first, metrics, spans), then
    the store."""
    if store is None:
        return obs_sink
    return FanOut(obs_sink, DetectionRecords(store))


class DetectionRecords:
    """The store indexes detections and their responses; agent-level records (reloads,
    Kubernetes Events that could not be created) stay in the JSONL log only."""

    def __init__(self, store: Any):
        self.store = store

    def record(self, rec: Any) -> None:
        if rec.kind not in (RELOAD, K8S_EVENT):
            self.store.record(rec)

    def close(self) -> None:
        """The store is closed by Pipeline.stop (it also takes alerts)."""
