"""An in-process live agent for system tests: the real Agent (probes, state, rules) on a
thread, with every Alert kept, so tests can read any field of the matched event."""

from __future__ import annotations

import io
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

from enforcer.agent import Agent
from enforcer.alert import Alert
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules
from enforcer.sources.probe import ProbeConfig

# fields resolved while the process may still be alive (as an output would)
EAGER = ("proc.name", "proc.pname", "proc.cmdline", "container.id", "container.name",
         "container.image.repository", "k8s.pod.name", "k8s.ns.name", "fd.name", "proc.exepath")


class LiveAgent:
    """Agent on a background thread; `alerts` grows as rules fire."""

    def __init__(self, rule_paths: list[str], probe_config: ProbeConfig | None = None,
                 container_lookup_timeout: float | None = 5.0, cri_socket: str | None = None):
        self.engine = Engine(load_rules(rule_paths))
        self.alerts: list[Alert] = []
        self._lock = threading.Lock()
        self.stderr = io.StringIO()
        # The tests' containers run with --rm and exit within milliseconds, and a cold
        # podman API on a loaded CI machine can take seconds to answer: events that need a
        # new container's metadata may wait longer for it than the agent's default
        # (None: the default, as tests/system/test_container_metadata.py checks).
        extra = ({} if container_lookup_timeout is None
                 else {"container_lookup_timeout": container_lookup_timeout})
        self.agent = Agent(self.engine, on_alert=self._keep, probe_config=probe_config,
                           rules=self.engine.rules, stderr=self.stderr,
                           cri_socket=cri_socket, **extra)
        self.agent.open()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.agent.run, args=(self._stop,), daemon=True)
        self._thread.start()
        self.agent.started.wait(10)

    def _keep(self, alert: Alert) -> None:
        for f in EAGER:
            alert.event.get(f)
        with self._lock:
            self.alerts.append(alert)

    def wait(self, rule: str, pred: Callable[[Alert], bool] = lambda a: True,
             timeout: float = 30) -> Alert:
        """The first alert of `rule` satisfying `pred` (fails after timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(rule, pred)
            if found:
                return found[0]
            time.sleep(0.05)
        with self._lock:
            seen = sorted({a.rule for a in self.alerts})
        # events the kernel dropped (ring buffer full, e.g. under another test's flood) are
        # the first suspect for an alert that never came
        raise AssertionError(f"no {rule!r} alert matched; rules seen: {seen}; kernel drops "
                             f"so far: {self.agent.drops.total}")

    def find(self, rule: str, pred: Callable[[Alert], bool] = lambda a: True) -> list[Alert]:
        with self._lock:
            return [a for a in self.alerts if a.rule == rule and pred(a)]

    def barrier(self) -> None:
        """Return once every event produced before this call has been evaluated: the ring
        buffer is ordered, so the alert of a fresh marker event comes after them."""
        marker = f"/etc/shadow-barrier-{uuid.uuid4().hex[:8]}"
        seen = lambda a: marker in (a.event.get("proc.cmdline") or "")  # noqa: E731
        deadline = time.monotonic() + 30
        # A marker that arrives while the ring buffer is still full (after a flood) is
        # dropped like any other event; send it again until one gets through.
        while True:
            subprocess.run(["sh", "-c", f"cat /etc/shadow {marker} >/dev/null 2>&1; true"],
                           check=False)
            try:
                self.wait("Read sensitive file untrusted", seen,
                          timeout=max(0.1, min(3.0, deadline - time.monotonic())))
                return
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise

    def close(self) -> None:
        self._stop.set()
        self._thread.join(120)
        # closing the probes under a running loop would free what it still reads
        assert not self._thread.is_alive(), "the agent's event loop did not stop in 120 s"
        self.agent.close()


def only_tgid(tgid: int) -> dict[str, str]:
    """ProbeConfig.extra_defines that keep the events of `tgid` alone: the kernel's
    exclusion of the agent's own process (`tgid == AGENT_TGID`), turned around so that
    every other process looks like the agent. A shared machine's activity then cannot
    fill the ring or add to its drop count."""
    me = "(u32)(bpf_get_current_pid_tgid() >> 32)"
    return {"AGENT_TGID_VALUE": f"({me} ^ ({me} == {tgid}))"}


def sh(script: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a shell script (from a child shell, never from the agent's own process)."""
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                          check=False, **kw)  # type: ignore[arg-type]

