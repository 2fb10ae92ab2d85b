"""Kubernetes Events for responses: `kubectl describe pod` and `kubectl get events` show what
enforcer did (or would have done, or was refused) to a pod, next to the kubelet's own events.

For every action outcome on a pod — done, dry-run, failed, suppressed by a guard — one core/v1
Event is created in the pod's namespace, its involvedObject the pod. The responder hands the
outcome over with `submit()`, which never blocks: a worker thread of its own makes the API
call from a bounded queue, so a slow or dead API server delays neither detection nor the
next action. A failed or dropped Event is logged (once a minute, with a count), counted in
`enforcer_kubernetes_events_total{result}` and written to the audit log as a `k8s_event`
record; it is never retried beyond the call's own timeout (the audit log is the durable
record, an Event is a courtesy to the cluster's users).

The RBAC it needs: `events: create` (the chart grants it with kubernetesEvents.enabled).
"""

from __future__ import annotations

import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from actions.base import DONE, DRY_RUN, FAILED, SUPPRESSED
from enforcer.alert import Alert
from enforcer.audit.record import K8S_EVENT, AuditRecord

COMPONENT = "enforcer"
OUTCOMES = (DONE, DRY_RUN, FAILED, SUPPRESSED)
_MESSAGE_LIMIT = 1024          # the API server's limit on an Event's message (note)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_STOP = object()


SUSPENSION = "policy-suspended"  # the responder's action name for a breaker trip


def event_reason(action: str, outcome: str) -> str:
    """`EnforcerKill`, `EnforcerDeletePod` for what was done; `EnforcerDryRun`,
    `EnforcerFailed`, `EnforcerSuppressed` otherwise (the action is in the message);
    `EnforcerPolicySuspended` when a policy's blast-radius breaker tripped on the pod."""
    if action == SUSPENSION:
        return "EnforcerPolicySuspended"
    if outcome == DONE:
        return "Enforcer" + "".join(w.capitalize() for w in re.split(r"[_\-\s]+", action) if w)
    return {DRY_RUN: "EnforcerDryRun", FAILED: "EnforcerFailed",
            SUPPRESSED: "EnforcerSuppressed"}.get(outcome, "EnforcerResponse")


def event_type(outcome: str, action: str = "") -> str:
    """Warning when something was done to the pod or failed, or a policy was suspended
    (enforcement stopped spreading: someone must look); Normal for what was only planned
    (dry-run) or refused by a guard."""
    return "Warning" if outcome in (DONE, FAILED) or action == SUSPENSION else "Normal"


def pod_of(alert: Alert, rec: AuditRecord) -> tuple[str, str, str | None] | None:
    """(namespace, pod, uid) the outcome concerns: the action's own target when it names a
    pod, else the alert's k8s fields; None when it is not a pod (or the names are not
    valid Kubernetes names: event fields come from the workload)."""
    target = rec.target or {}
    fields: dict[str, Any] = dict(alert.output_fields or {})
    for key in ("k8s.ns.name", "k8s.pod.name", "k8s.pod.uid"):
        if fields.get(key) in (None, "") and alert.event is not None:
            fields[key] = alert.event.get(key)
    namespace = target.get("namespace") or fields.get("k8s.ns.name")
    pod = target.get("pod") or fields.get("k8s.pod.name")
    if not (isinstance(namespace, str) and _DNS_LABEL.match(namespace)
            and isinstance(pod, str) and _DNS_SUBDOMAIN.match(pod)):
        return None
    uid = fields.get("k8s.pod.uid")
    same_pod = pod == fields.get("k8s.pod.name") and namespace == fields.get("k8s.ns.name")
    return namespace, pod, (str(uid) if uid and same_pod else None)


def event_message(alert: Alert, rec: AuditRecord) -> str:
    """Rule, policy, action and outcome, then why (guard, error, what was rendered)."""
    text = (f"rule {alert.rule!r} ({alert.priority.display}): policy {rec.policy!r} action "
            f"{rec.action} {rec.outcome}" + (" (dry run)" if rec.dry_run and
                                             rec.outcome != DRY_RUN else ""))
    why = rec.error or rec.reason or rec.message
    if why:
        text += f": {why}"
    if alert.trace_id:
        text += f" [trace {alert.trace_id}]"
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT - 1] + "…"


def event_body(alert: Alert, rec: AuditRecord, pod: tuple[str, str, str | None], *,
               instance: str, host: str | None, now: datetime | None = None
               ) -> dict[str, Any]:
    """The core/v1 Event for one action outcome on `pod`."""
    namespace, name, uid = pod
    now = now or datetime.now(UTC)
    involved: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "name": name,
                                "namespace": namespace}
    if uid:
        involved["uid"] = uid
    source: dict[str, Any] = {"component": COMPONENT}
    if host:
        source["host"] = host
    return {
        "apiVersion": "v1", "kind": "Event",
        # unique per outcome, like the kubelet's: object name, then a hex timestamp
        "metadata": {"name": f"{name[:200]}.{time.time_ns():x}", "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": COMPONENT},
                     "annotations": {k: v for k, v in (
                         ("enforcer.io/rule", alert.rule),
                         ("enforcer.io/policy", rec.policy or ""),
                         ("enforcer.io/match-id", rec.match_id),
                         ("enforcer.io/trace-id", alert.trace_id or "")) if v}},
        "involvedObject": involved,
        "reason": event_reason(rec.action or "", rec.outcome),
        "message": event_message(alert, rec),
        "type": event_type(rec.outcome, rec.action or ""),
        "action": (rec.action or "respond")[:128],
        "source": source,
        "reportingComponent": COMPONENT,
        "reportingInstance": instance[:128],
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "count": 1,
    }


class KubeEvents:
    """Records response outcomes on pods as Kubernetes Events, off the responder's thread.

    `kube()` returns the adapter (enforcer.adapters.kube.KubeAdapter) when the first Event is
    sent; `audit` gets a `k8s_event` record for each Event that could not be created."""

    def __init__(self, kube: Callable[[], Any], *, audit: Any = None,
                 node_name: str | None = None, hostname: str = "",
                 metrics: Any = None, queue_size: int = 1000,
                 log_every: float = 60.0):
        self._kube = kube
        self.audit = audit
        self.host = node_name or hostname or None
        self.instance = f"{COMPONENT}-{node_name or hostname or 'agent'}"
        self.metrics = metrics
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.counts = {"created": 0, "failed": 0, "dropped": 0}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._log_every = log_every
        self._last_log = 0.0
        self._unlogged = 0

    # -- the responder's side ----------------------------------------------------------------

    def submit(self, alert: Alert, rec: AuditRecord) -> None:
        """An action outcome (never blocks, never raises): queued when it concerns a pod."""
        if rec.outcome not in OUTCOMES or not rec.action:
            return
        pod = pod_of(alert, rec)
        if pod is None:
            return
        try:
            self.queue.put_nowait((alert, rec, pod))
        except queue.Full:
            self._failed(alert, rec, pod, "dropped",
                         f"the Kubernetes Events queue is full ({self.queue.maxsize})")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> KubeEvents:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="enforcer-k8s-events",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (bounded by `timeout`), then stop."""
        if self._thread is None:
            return
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None

    def drain(self) -> None:
        """Block until every queued Event was sent or given up (tests)."""
        self.queue.join()

    # -- worker ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is _STOP:
                    return
                self._send(*item)
            except Exception as exc:  # noqa: BLE001 - an Event must never stop the worker
                self._log(f"enforcer: Kubernetes Event worker error: {exc!r}")
            finally:
                self.queue.task_done()

    def _send(self, alert: Alert, rec: AuditRecord, pod: tuple[str, str, str | None]) -> None:
        body = event_body(alert, rec, pod, instance=self.instance, host=self.host)
        try:
            self._kube().create_event(pod[0], body)
        except Exception as exc:  # noqa: BLE001 - ActionError, or no credentials at all
            self._failed(alert, rec, pod, "failed", str(exc), body["reason"])
            return
        self._count("created")

    def _failed(self, alert: Alert, rec: AuditRecord, pod: tuple[str, str, str | None],
                result: str, why: str, reason: str | None = None) -> None:
        self._count(result)
        self._log(f"enforcer: warning: Kubernetes Event for pod {pod[0]}/{pod[1]} not "
                  f"recorded ({result}): {why}")
        if self.audit is None:
            return
        try:
            self.audit.record(AuditRecord(
                kind=K8S_EVENT, match_id=rec.match_id, outcome=result, rule=alert.rule,
                priority=alert.priority.display, policy=rec.policy,
                target={"namespace": pod[0], "pod": pod[1]}, error=why,
                reason=reason or event_reason(rec.action or "", rec.outcome),
                trace_id=alert.trace_id, policy_digest=rec.policy_digest,
                detail={"action": rec.action, "action_outcome": rec.outcome}))
        except Exception as exc:  # noqa: BLE001 - auditing the courtesy must not break it
            self._log(f"enforcer: audit of a Kubernetes Event failed: {exc!r}")

    def _count(self, result: str) -> None:
        with self._lock:
            self.counts[result] = self.counts.get(result, 0) + 1
        if self.metrics is not None:
            self.metrics.kubernetes_event(result)

    def _log(self, line: str) -> None:
        # A dead API server fails every Event: one line a minute says so, with the count.
        now = time.monotonic()
        with self._lock:
            if self._last_log and now - self._last_log < self._log_every:
                self._unlogged += 1
                return
            held, self._unlogged, self._last_log = self._unlogged, 0, now
        if held:
            line += f" [{held} similar message(s) not shown]"
        print(line, file=sys.stderr, flush=True)
