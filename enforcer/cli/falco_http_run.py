"""`enforcer --source falco-http`: answer the alerts of a Falco that already runs.

No eBPF and no rules here: Falco detects, POSTs each alert (http_output, or Falcosidekick's
webhook output), and the agent runs the same policies, responder, audit, outputs, metrics
and traces as for its own detections. The live agent's command calls `run_falco_http(args)`
when `--source falco-http` is given.

Exit codes: 0 stopped cleanly; 1 invalid policies; 2 a usage mistake (including an
unauthenticated intake while policies would act); 3 the address cannot be bound.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from enforcer.cli.observe_args import ObserveConfigError, falco_http_config, from_args
from enforcer.errors import PolicyError
from enforcer.health import POLICIES_LOADED, Readiness
from enforcer.sources.falco_http import FalcoHttpSource, IntakeConfigError, start_falco_http

INTAKE_LISTENING = "falco_http_listening"


def _base_outputs(args: argparse.Namespace) -> list[Any]:
    from enforcer.outputs.stream import FileOutput, StreamOutput  # noqa: PLC0415

    fmt = getattr(args, "format", "json") or "json"
    outputs: list[Any] = [StreamOutput(fmt)]
    path = getattr(args, "output_file", None)
    if path:
        outputs.append(FileOutput(path, fmt))
    return outputs


def run_falco_http(args: argparse.Namespace, *, stop: threading.Event | None = None,
                   on_ready: Callable[[FalcoHttpSource, Any], None] | None = None,
                   hostname: str | None = None) -> int:
    """Serve the falco-http input until SIGINT/SIGTERM (or `stop` is set)."""
    from enforcer.respond.options import responder_from_args  # noqa: PLC0415

    err = sys.stderr
    try:
        base = _base_outputs(args)
    except OSError as exc:
        print(f"enforcer: cannot open --output-file: {exc.strerror}", file=err)
        return 2
    try:
        obs = from_args(args, hostname=hostname, base_outputs=base,
                        readiness=Readiness((POLICIES_LOADED, INTAKE_LISTENING)))
        intake = falco_http_config(args)
    except ObserveConfigError as exc:
        print(f"enforcer: {exc}", file=err)
        return 2
    audit_path = getattr(args, "audit_log", "/var/log/enforcer/audit.jsonl")
    try:
        audit = obs.audit_sink(audit_path)
    except OSError as exc:
        print(f"enforcer: cannot open the audit log {audit_path}: {exc.strerror}", file=err)
        return 3
    try:
        responder = responder_from_args(args, hostname=hostname or "", audit=audit,
                                        on_critical=obs.pipeline.emit)
    except PolicyError as exc:
        for diagnostic in exc.diagnostics:
            print(str(diagnostic), file=err)
        audit.close()
        return 1
    acting = not args.dry_run and any(not p.dry_run for p in responder.policies.enabled())
    try:
        obs.start()
    except OSError as exc:
        print(f"enforcer: cannot serve --http-addr {obs.http_addr}: {exc.strerror}", file=err)
        audit.close()
        return 3
    obs.attach_responder(responder)
    responder.start()
    try:
        source = start_falco_http(intake, obs.pipeline.emit, acting=acting,
                                  metrics=obs.metrics)
    except IntakeConfigError as exc:
        print(f"enforcer: {exc}", file=err)
        _shutdown(responder, obs)
        return 2
    except OSError as exc:
        print(f"enforcer: cannot listen on --falco-http-addr {intake.addr}: {exc.strerror}",
              file=err)
        _shutdown(responder, obs)
        return 3
    obs.readiness.set(INTAKE_LISTENING, True, intake.addr)
    mode = "acting" if acting else "dry-run"
    print(f"enforcer: ready: falco-http on {intake.addr} (port {source.port}), "
          f"{len(responder.policies.enabled())} policies, {mode}, auth "
          f"{source.auth_description}", file=err, flush=True)

    stop = stop or _signal_stop()
    if on_ready is not None:
        on_ready(source, obs)
    try:
        stop.wait()
    finally:
        source.stop()
        _shutdown(responder, obs)
        err.write(obs.summary(responder))
        rejected = sum(n for code, n in source.responses.items() if code >= 400)
        err.write(f"falco-http requests: {sum(source.responses.values())} "
                  f"({rejected} rejected)\n")
        err.flush()
    return 0


def _shutdown(responder: Any, obs: Any) -> None:
    responder.stop()
    obs.close()


def _signal_stop() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
