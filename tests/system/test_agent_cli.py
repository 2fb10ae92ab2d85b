"""The live agent through its command line: `enforcer --dry-run` prints Falco JSON alerts,
`--output-file` appends them, SIGINT/SIGTERM stop it cleanly with Falco's summary; without
root it explains itself with a distinct exit code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from enforcer.errors import ProbeError
from tests.conftest import require

pytestmark = [pytest.mark.root, pytest.mark.ebpf]


class AgentProcess:
    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.out: list[str] = []
        self.err: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True).start()

    def _read(self, stream, sink: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            sink.append(line)
            if "enforcer: ready" in line:
                self.ready.set()

    def wait_out(self, pred, timeout: float = 30) -> str:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.out):
                if pred(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no matching alert line; stderr: {''.join(self.err)[-2000:]}")

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(60)
        time.sleep(0.2)  # let the reader threads take the last lines
        return rc


def _start(enforcer_cmd: list[str], cli_env: dict[str, str], *args: str) -> AgentProcess:
    agent = AgentProcess([*enforcer_cmd, *args], cli_env)
    if not agent.ready.wait(120):
        agent.proc.kill()
        raise AssertionError(f"agent not ready: {''.join(agent.err)}")
    return agent


def test_dry_run_json_alerts_output_file_and_summary(ebpf_ready: None, enforcer_cmd: list[str],
                                                     cli_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    out_file = tmp_path / "alerts.jsonl"
    agent = _start(enforcer_cmd, cli_env, "--dry-run", "--output-file", str(out_file))
    marker = f"/nonexistent-{uuid.uuid4().hex[:8]}"
    subprocess.run(["sh", "-c", f"cat /etc/shadow {marker} >/dev/null 2>&1; true"], check=False)
    line = agent.wait_out(lambda s: marker in s)
    alert = json.loads(line)
    assert alert["rule"] == "Read sensitive file untrusted"
    assert alert["priority"] == "Warning" and alert["source"] == "syscall"
    assert alert["output_fields"]["fd.name"] == "/etc/shadow"
    assert alert["output_fields"]["proc.name"] == "cat"
    assert alert["output_fields"]["proc.pname"] == "sh"
    assert set(alert) >= {"hostname", "output", "output_fields", "priority", "rule",
                          "source", "tags", "time"}
    assert agent.stop(signal.SIGINT) == 0
    err = "".join(agent.err)
    assert "Syscall event drop monitoring:" in err
    assert "   - event drop detected: 0 occurrences" in err
    assert "Events detected:" in err and "Rule counts by severity:" in err
    assert "   Read sensitive file untrusted:" in err
    assert "Traceback" not in err
    assert any(marker in x for x in out_file.read_text().splitlines())


def test_text_format_and_sigterm(ebpf_ready: None, enforcer_cmd: list[str],
                                 cli_env: dict[str, str]) -> None:
    agent = _start(enforcer_cmd, cli_env, "--dry-run", "--format", "text")
    marker = f"/nonexistent-{uuid.uuid4().hex[:8]}"
    subprocess.run(["sh", "-c", f"cat /etc/shadow {marker} >/dev/null 2>&1; true"], check=False)
    line = agent.wait_out(lambda s: marker in s)
    assert ": Warning Sensitive file opened for reading by non-trusted program |" in line
    assert agent.stop(signal.SIGTERM) == 0
    assert "Events detected:" in "".join(agent.err)


def test_text_output_escapes_control_characters(ebpf_ready: None, enforcer_cmd: list[str],
                                                cli_env: dict[str, str]) -> None:
    """Threat: a process's arguments are the attacker's text. With a newline it forges a
    whole alert line in the text output (and in whatever reads it); with ESC it drives the
    terminal of whoever tails the log. Each alert stays one line, its controls escaped."""
    agent = _start(enforcer_cmd, cli_env, "--dry-run", "--format", "text")
    marker = f"/nonexistent-{uuid.uuid4().hex[:8]}"
    forged = "00:00:00.000000000: Critical forged alert"
    subprocess.run(["cat", "/etc/shadow", f"{marker}\n{forged}\x1b[2J\r\x07"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    line = agent.wait_out(lambda s: marker in s)
    assert agent.stop(signal.SIGTERM) == 0
    assert f"{marker}\\n{forged}\\x1b[2J\\r\\x07" in line
    out, err = "".join(agent.out), "".join(agent.err)
    assert not any(s.startswith(forged) for s in out.splitlines())
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "\x1b" not in err


def test_not_root_explains_and_exits_3(enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    require(shutil.which("setpriv") is not None, "setpriv, to drop privileges",
            "apt-get install util-linux (scripts/setup.sh does)")
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          *enforcer_cmd, "--dry-run"], capture_output=True, text=True,
                         env=cli_env, timeout=120, check=False, cwd="/")
    assert res.returncode == 3, res.stderr
    assert "needs root" in res.stderr and "Traceback" not in res.stderr


def test_compile_error_is_a_probe_error(ebpf_ready: None) -> None:
    from enforcer.adapters.bcc_probe import EXIT_COMPILE, BccProbe  # noqa: PLC0415

    with pytest.raises(ProbeError) as info:
        BccProbe("int broken( {")
    assert info.value.exit_code == EXIT_COMPILE
    assert "enforcer probes render" in str(info.value)


def test_doctor_reports_ok_here(ebpf_ready: None, enforcer_cmd: list[str],
                                cli_env: dict[str, str]) -> None:
    res = subprocess.run([*enforcer_cmd, "doctor"], capture_output=True, text=True,
                         env=cli_env, timeout=60, check=False)
    assert res.returncode == 0, res.stdout
    for name in ("privileges", "tracefs", "kernel headers", "bcc", "BTF"):
        assert f"ok   {name}:" in res.stdout
    assert os.path.exists("/sys/kernel/tracing/events")
