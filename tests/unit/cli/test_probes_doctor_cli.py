"""`enforcer probes render` needs no kernel; `enforcer doctor` explains, never crashes."""

from __future__ import annotations

import subprocess
from pathlib import Path

RULES = """
- macro: open_read
  condition: (evt.type in (open,openat,openat2) and evt.is_open_read=true and fd.typechar='f')
- rule: shadow
  desc: d
  condition: open_read and fd.name = /etc/shadow
  output: "read %fd.name"
  priority: WARNING
"""


def test_probes_render_prints_the_c_and_the_filter(tmp_path: Path, enforcer_cmd: list[str],
                                                   cli_env: dict[str, str]) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES)
    res = subprocess.run([*enforcer_cmd, "probes", "render", "--rules", str(rules),
                          "--agent-pid", "4242"], capture_output=True, text=True, env=cli_env,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_openat)" in res.stdout
    assert "sys_enter_sendto" not in res.stdout  # not needed by these rules
    # connect is there for the fd table only: its records reduced in the kernel
    assert "sys_enter_connect" in res.stdout
    assert "for the fd table only" in res.stderr and "connect" in res.stderr.split(
        "for the fd table only")[1].splitlines()[0]
    assert "sched_process_fork" in res.stdout and "sys_enter_execve)" in res.stdout
    assert "#define AGENT_TGID 4242" in res.stdout and "#define OPEN_FILTER 1" in res.stdout
    assert "/etc/shadow (exact): classes 0xaaaa" in res.stderr


def test_probes_render_bad_rules_is_a_finding(tmp_path: Path, enforcer_cmd: list[str],
                                              cli_env: dict[str, str]) -> None:
    rules = tmp_path / "bad.yaml"
    rules.write_text("- rule: x\n  condition: (\n  output: o\n  priority: WARNING\n  desc: d\n")
    res = subprocess.run([*enforcer_cmd, "probes", "render", "--rules", str(rules)],
                         capture_output=True, text=True, env=cli_env, timeout=60, check=False)
    assert res.returncode == 1 and "bad.yaml:" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


def test_doctor_never_tracebacks(enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    res = subprocess.run([*enforcer_cmd, "doctor"], capture_output=True, text=True,
                         env=cli_env, timeout=60, check=False)
    assert res.returncode in (0, 3)
    assert "privileges:" in res.stdout and "tracefs:" in res.stdout
    assert "Traceback" not in res.stderr
