"""The `enforcer` agent as a child process, for tests that drive it from outside: waits for
its ready line, knows its ports, reads its alerts, audit log and HTTP endpoints."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SESSION_AGENT_PATHS, agent_paths


class AgentProcess:
    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path,
                 audit: Path, timeout: float = 180.0):
        """Start `argv` with `env` and wait for its ready line. ENFORCER_AUDIT_LOG,
        ENFORCER_STATE_DIR and ENFORCER_SNAPSHOT_DIR that `env` does not set to paths of its
        own point under `workdir/agent-paths`."""
        self.workdir = workdir
        self.audit = audit
        # its own audit log, state and snapshot directories, wherever the caller's
        # environment left them to the session's defaults (or to the machine's)
        own = agent_paths(workdir / "agent-paths")
        env = dict(env) | {name: own[name] for name in own
                           if env.get(name) in (None, SESSION_AGENT_PATHS.get(name))}
        self.out_path = workdir / "agent.out"
        self.err_path = workdir / "agent.err"
        self._out = self.out_path.open("w")
        self._err = self.err_path.open("w")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, env=env,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while "enforcer: ready:" not in self.stderr:
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent exited {self.proc.returncode}:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the agent never became ready:\n{self.stderr}")
            time.sleep(0.1)
        ready = next(line for line in self.stderr.splitlines() if "enforcer: ready:" in line)
        self.ready_line = ready
        self.digest = re.search(r"policy digest ([0-9a-f]+)", ready).group(1)  # type: ignore[union-attr]
        http = re.search(r"(?<![-\w])http on port (\d+)", ready)
        self.http_port = int(http.group(1)) if http else None
        falco = re.search(r"falco-http on port (\d+)", ready)
        self.falco_port = int(falco.group(1)) if falco else None

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out_path.read_text().splitlines()
                if line.startswith("{")]

    def records(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line]

    def wait(self, what: str, find: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll `find()` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            found = find()
            if found:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent died waiting for {what}:\n{self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; agent stderr:\n"
                                     f"{self.stderr[-3000:]}")
            time.sleep(0.05)

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
        _, text = self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    total += sample.value
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()
        return self.proc.returncode
