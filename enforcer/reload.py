"""Hot reload of the rules and response policies, with the last good set kept on error.

    reloader = Reloader(rules=["/usr/share/enforcer/rules", "/etc/enforcer/rules"],
                        policies=["/etc/enforcer/policies"],
                        on_swap=lambda new, old: responder.use_policies(
                            new.policies, new.short_digest),
                        on_critical=outputs.emit, audit=audit)
    reloader.start()
    ... reloader.current.engine.evaluate(event) ...   # one reference read per event
    reloader.stop()

Why polling and not inotify: a mounted ConfigMap changes by the kubelet writing a new
timestamped directory (`..2026_11_23_16_00_00.123`) and renaming the `..data` symlink over
the old one, so the files the agent reads (`contain.yaml -> ..data/contain.yaml`) change
without any event on them; inotify would have to watch the directory for the rename of
`..data` and re-arm itself, through ctypes since the standard library has no inotify, and
behaves differently on overlay, NFS and bind mounts. Once a second, the reloader instead
resolves every file the loaders would read (symlinks followed) and stats it: a handful of
stat calls, robust to the symlink swap, to editors that replace files, and to a directory
mounted anew. A change is confirmed by the content digest, so a touched file does not swap.

A new set is loaded completely (rules compiled into an Engine, policies, the cross-checks of
`enforcer validate`) before one reference assignment makes it current, so an event is
judged by the old set or the new, never a mix. A set that does not load leaves the last good
set active and is reported once per change: a critical alert-like record (`on_critical`),
an audit record of kind `reload` naming the file and line, and the metric
`enforcer_policy_reloads_total{result}` — counted by enforcer.audit.metrics_sink from that
record when MetricsAudit is in the audit chain, or through `on_loaded(ok)` for an embedder
without it (pass one or the other, not both)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from enforcer.alert import Alert
from enforcer.audit.record import RELOAD, AuditRecord, AuditSink, new_match_id
from enforcer.errors import Diagnostic
from enforcer.gitops.bundle import Bundle, BundleError, load_bundle, source_files
from enforcer.outputs.escape import escape_control
from enforcer.priority import Priority

RELOAD_FAILED_RULE = "Enforcer policy reload failed"

Fingerprint = tuple[tuple[str, str, int, int, int], ...]


def fingerprint(rule_paths: Sequence[str | Path],
                policy_paths: Sequence[str | Path]) -> Fingerprint:
    """(path, resolved path, inode, size, mtime) of every file the loaders would read."""
    out = []
    for kind, path in source_files(rule_paths, policy_paths):
        try:
            real = os.path.realpath(path)
            st = os.stat(real)
            out.append((f"{kind}:{path}", real, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((f"{kind}:{path}", "", 0, -1, 0))
    return tuple(out)


class Reloader:
    """Keeps `current` (an enforcer.gitops.bundle.Bundle: engine, policies, digest) up to
    date with the files under `rules` and `policies`."""

    def __init__(self, rules: Sequence[str | Path], policies: Sequence[str | Path], *,
                 on_swap: Callable[[Bundle, Bundle], Any] | None = None,
                 on_critical: Callable[[Alert], Any] | None = None,
                 on_loaded: Callable[[bool], Any] | None = None,
                 audit: AuditSink | None = None,
                 enabled_actions: set[str] | None = None,
                 hostname: str | None = None, interval: float = 1.0,
                 initial: Bundle | None = None,
                 build_engine: Callable[[Any], Any] | None = None):
        """Loads the initial set now (raises BundleError when it does not load: the agent
        cannot start without one), unless `initial` is given."""
        self.rule_paths = list(rules)
        self.policy_paths = list(policies)
        self.on_swap = on_swap
        self.on_critical = on_critical or _print_critical
        self.on_loaded = on_loaded
        self.audit = audit
        self.enabled_actions = enabled_actions
        self.hostname = hostname
        self.interval = interval
        self.build_engine = build_engine  # the agent's rule selection and engine options
        self._seen = fingerprint(self.rule_paths, self.policy_paths)
        self._current = initial or self._load()
        self.last_error: BundleError | None = None
        self.reloads = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one check at a time (the thread, or a caller)

    @property
    def current(self) -> Bundle:
        """The active set. Read it once per event: the reference is swapped atomically."""
        return self._current

    @property
    def digest(self) -> str:
        """Short digest of the active set, for audit records and traces."""
        return self._current.short_digest

    def _load(self) -> Bundle:
        return load_bundle(self.rule_paths, self.policy_paths,
                           enabled_actions=self.enabled_actions, hostname=self.hostname,
                           build_engine=self.build_engine)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Reloader:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="enforcer-reloader",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # the watcher must outlive any surprise
                print(f"enforcer: reloader error: {exc!r}", file=sys.stderr)

    # -- one look ----------------------------------------------------------------------------

    def check(self) -> str:
        """Look once: "unchanged", "swapped", "same" (files changed, content did not),
        "failed" (reported; the last good set stays), or "retry" (files changing now)."""
        with self._lock:
            seen = fingerprint(self.rule_paths, self.policy_paths)
            if seen == self._seen:
                return "unchanged"
            try:
                new = self._load()
            except Exception as exc:  # a loader bug must not retry and shout every second
                error = exc if isinstance(exc, BundleError) else _internal(exc, seen)
                if error.transient or fingerprint(self.rule_paths, self.policy_paths) != seen:
                    return "retry"  # caught mid-update: look again at the next tick
                self._seen = seen
                self._failed(error)
                return "failed"
            if fingerprint(self.rule_paths, self.policy_paths) != seen:
                return "retry"
            self._seen = seen
            old = self._current
            self.last_error = None
            if new.digest == old.digest:
                return "same"
            self._current = new
            self.reloads += 1
            self._report_swap(new, old)
            if self.on_swap is not None:
                try:
                    self.on_swap(new, old)
                except Exception as exc:
                    print(f"enforcer: reload hook failed: {exc!r}", file=sys.stderr)
            return "swapped"

    # -- reporting -------------------------------------------------------------------------

    def _report_swap(self, new: Bundle, old: Bundle) -> None:
        if self.on_loaded is not None:
            self.on_loaded(True)
        counts = new.ruleset.counts()
        self._audit(AuditRecord(
            kind=RELOAD, match_id=new_match_id(), outcome="applied",
            policy_digest=new.short_digest,
            message=f"rules and policies reloaded: {counts['rules']} rules, "
                    f"{len(new.policies.policies)} policies (digest {old.short_digest} -> "
                    f"{new.short_digest})",
            detail={"previous_digest": old.short_digest, "files": list(new.files),
                    "warnings": [str(w) for w in new.warnings]}))
        print(f"enforcer: reloaded rules and policies, digest {old.short_digest} -> "
              f"{new.short_digest}", file=sys.stderr, flush=True)

    def _failed(self, exc: BundleError) -> None:
        self.failures += 1
        self.last_error = exc
        errors = exc.errors or exc.diagnostics
        first = errors[0] if errors else None
        active = self._current.short_digest
        where = f"{first.file}:{first.line}:{first.column}" if first else "?"
        message = (f"rules/policies update refused, {len(errors)} error(s), first at {where}: "
                   f"{first.message if first else exc}; still enforcing the last good set "
                   f"(digest {active})")
        if self.on_loaded is not None:
            self.on_loaded(False)
        self._audit(AuditRecord(
            kind=RELOAD, match_id=new_match_id(), outcome="failed", policy_digest=active,
            reason=message, error=str(first) if first else str(exc),
            detail={"file": first.file if first else None,
                    "line": first.line if first else None,
                    "column": first.column if first else None,
                    "errors": [str(d) for d in errors]}))
        alert = Alert(rule=RELOAD_FAILED_RULE, priority=Priority.CRITICAL, output=message,
                      output_fields={"reload.file": first.file if first else None,
                                     "reload.line": first.line if first else None,
                                     "reload.column": first.column if first else None,
                                     "reload.errors": len(errors),
                                     "reload.active_digest": active},
                      time_ns=time.time_ns(), source="enforcer", tags=("enforcer",),
                      hostname=self.hostname or "")
        try:
            self.on_critical(alert)
        except Exception as exc2:
            print(f"enforcer: critical alert output failed: {exc2!r}", file=sys.stderr)

    def _audit(self, rec: AuditRecord) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(rec)
        except Exception as exc:
            print(f"enforcer: audit failed: {exc!r}", file=sys.stderr)


def _internal(exc: Exception, seen: Fingerprint) -> BundleError:
    """A loader that raised instead of reporting diagnostics: one finding, on the first
    file, so that it is reported once like any other refused update."""
    first = seen[0][0].split(":", 1)[1] if seen else "?"
    return BundleError([Diagnostic(first, 1, 1, f"internal error while loading: {exc!r}")])


def _print_critical(alert: Alert) -> None:
    print(escape_control(alert.text_line), file=sys.stderr, flush=True)


class CurrentEngine:
    """The rules engine of whatever set is current: hand this to code that holds an engine
    (the live agent's `Agent(engine, ...)`), and every event is judged by the set active
    when it arrives, without that code knowing about reloads."""

    def __init__(self, reloader: Reloader):
        self.reloader = reloader

    def evaluate(self, event: Any) -> list[Alert]:
        return self.reloader.current.engine.evaluate(event)

    def event_types(self) -> frozenset[str] | None:
        return self.reloader.current.engine.event_types()

    @property
    def rules(self) -> list[Any]:
        return self.reloader.current.engine.rules
