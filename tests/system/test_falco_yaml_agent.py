"""Falco 0.44.1's shipped falco.yaml, unchanged, starts the live agent (real eBPF): its
settings shape what the agent does (text lines on stdout as `json_output: false`, alerts on
the syslog socket as `syslog_output`, the webserver's /metrics and /healthz), `-o` overrides
a key of the file as Falco's does, `-r A -r B` loads both rule files, and `-M` stops it.
/metrics carries Falco's metric names for the same matches."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

FALCO_YAML = REPO / "tests" / "data" / "falco-config" / "falco.yaml"
BUNDLED_RULES = REPO / "policies" / "rules"


class Syslog:
    """A syslog daemon of our own: a unix datagram socket in the test's directory."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _wait(pred, what: str, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pred()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def spawn_collected(argv: list[str], env: dict[str, str]
                    ) -> tuple[subprocess.Popen, list[str], list[str]]:
    """The agent started, its stdout and stderr lines collected as they come."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    out: list[str] = []
    err: list[str] = []
    for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
        threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")),
                         daemon=True).start()
    return proc, out, err


def ready_port(err: list[str]) -> int:
    """Waits for the agent's ready line; the HTTP port it names."""
    ready = _wait(lambda: next((x for x in err if "enforcer: ready" in x), None),
                  "the agent to be ready", 180)
    return int(ready.split("http on port ")[1].split()[0].rstrip(";,"))


def test_falcos_falco_yaml_starts_the_agent(ebpf_ready: None, enforcer_cmd: list[str],
                                            cli_env: dict[str, str], tmp_path: Path) -> None:
    marker = f"i18-falco-yaml-{uuid.uuid4().hex[:8]}"
    extra_rules = tmp_path / "extra_rules.yaml"
    extra_rules.write_text(
        f"- rule: I18 marker opened\n  desc: a test's own marker file opened\n"
        f"  condition: evt.type in (open, openat, openat2) and fd.name startswith /tmp/{marker}\n"
        f"  output: marker opened (file=%fd.name proc=%proc.name)\n  priority: ERROR\n"
        f"  tags: [i18]\n")
    syslog = Syslog(tmp_path / "log.sock")
    env = {**cli_env, "ENFORCER_SYSLOG_SOCKET": str(tmp_path / "log.sock")}
    argv = [*enforcer_cmd, "-c", str(FALCO_YAML),
            "-o", "webserver.listen_address=127.0.0.1", "-o", "webserver.listen_port=0",
            "-r", str(BUNDLED_RULES), "-r", str(extra_rules), "-M", "300", "--dry-run",
            "--audit-log", str(tmp_path / "audit.jsonl"), "--state-dir", str(tmp_path / "st"),
            "--snapshot-dir", str(tmp_path / "snap")]
    proc, out, err = spawn_collected(argv, env)
    try:
        port = ready_port(err)
        subprocess.run(["sh", "-c", f"cat /tmp/{marker}-a /etc/shadow >/dev/null 2>&1; true"],
                       check=False)
        # json_output: false -> Falco's text line; the rules of both -r files fire
        mine = _wait(lambda: next((x for x in out if f"/tmp/{marker}-a" in x), None),
                     "the marker alert on stdout")
        assert ": Error marker opened (file=/tmp/" in mine and not mine.startswith("{")
        _wait(lambda: any("Warning Sensitive file opened for reading" in x for x in out),
              "the bundled rule's alert on stdout")
        # syslog_output: enabled -> facility user, severity error (8 + 3)
        logged = _wait(lambda: next((m for m in syslog.messages if marker in m), None),
                       "the alert on the syslog socket")
        assert logged.startswith("<11>") and ": Error marker opened" in logged
        # webserver -> /metrics and /healthz on the address -o gave
        base = f"http://127.0.0.1:{port}"
        assert urllib.request.urlopen(f"{base}/healthz", timeout=10).status == 200
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        assert "enforcer_rule_matches_total" in metrics
        # Falco's name and labels for the same match, as Falco's dashboards query it
        falco = [s for f in text_string_to_metric_families(metrics) for s in f.samples
                 if s.name == "falcosecurity_falco_rules_matches_total"
                 and s.labels.get("rule_name") == "I18 marker opened"]
        assert len(falco) == 1 and falco[0].value >= 1
        assert (falco[0].labels["priority"], falco[0].labels["source"],
                falco[0].labels["tag_i18"]) == ("3", "syscall", "true")
    finally:
        proc.terminate()
        rc = proc.wait(60)
        syslog.close()
    time.sleep(0.2)
    stderr = "".join(err)
    assert rc == 0, stderr[-3000:]
    assert "warning: Falco's 'capture' does not apply" in stderr
    # engine.modern_ebpf: preset 4 (8 MiB) per 2 online CPUs, as one ring
    buffers = -(-os.sysconf("SC_NPROCESSORS_ONLN") // 2)
    size = min(512 << 20, 1 << ((8 << 20) * buffers - 1).bit_length())
    assert f"enforcer: ring buffer {size >> 10} KiB, one for all CPUs" in stderr
    assert "Traceback" not in stderr


def test_stop_after_seconds(ebpf_ready: None, enforcer_cmd: list[str],
                            cli_env: dict[str, str], tmp_path: Path) -> None:
    res = subprocess.run([*enforcer_cmd, "--dry-run", "-M", "2", "-r", str(BUNDLED_RULES),
                          "--audit-log", str(tmp_path / "audit.jsonl")],
                         capture_output=True, text=True, env=cli_env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "enforcer: ready" in res.stderr and "Events detected:" in res.stderr
