"""`enforcer validate` on in_kernel kills for connect rules: a rule on the remote port,
family and result is accepted; one on the socket's protocol, and upstream's "Disallowed
SSH Connection Non Standard Port" (fd.l4proto = tcp), are refused with the reason at the
policy's FILE:LINE:COL."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.unit.policy.test_in_kernel import UPSTREAM, policy

RULES = """\
- rule: Connect to a forbidden port
  desc: d
  condition: >
    evt.type = connect and evt.dir = < and fd.sport = 4444
    and (fd.typechar = 4 or fd.typechar = 6)
    and (evt.rawres >= 0 or evt.res = EINPROGRESS) and proc.name = python3
  output: o
  priority: WARNING
- rule: TCP connect to a forbidden port
  desc: d
  condition: evt.type = connect and fd.l4proto = tcp and fd.sport = 4444 and proc.name = python3
  output: o
  priority: WARNING
"""


def validate(cmd: list[str], env: dict[str, str], *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd + ["validate", *map(str, paths)], capture_output=True,
                          text=True, env=env)


def test_cli_validate_connect_rules(tmp_path: Path, enforcer_cmd: list[str],
                                    cli_env: dict[str, str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    path = tmp_path / "p.yaml"
    path.write_text(policy("Connect to a forbidden port"))
    done = validate(enforcer_cmd, cli_env, rules, path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("2 rules, 0 macros, 0 lists; 1 policies")
    path.write_text(policy("TCP connect to a forbidden port"))
    done = validate(enforcer_cmd, cli_env, rules, path)
    assert done.returncode == 1
    assert done.stdout.startswith(
        f"{path}:4:7: policy 'p': rule 'TCP connect to a forbidden port' cannot be enforced "
        "in the kernel: `fd.l4proto = tcp` cannot be checked exactly in the kernel on "
        "connect, sendto or sendmsg (the protocol is the socket's, not in the syscall's "
        "arguments: userspace reads it from /proc)")
    path.write_text(policy("Disallowed SSH Connection Non Standard Port"))
    done = validate(enforcer_cmd, cli_env, UPSTREAM, path)
    assert done.returncode == 1
    assert "'Disallowed SSH Connection Non Standard Port' cannot be enforced in the kernel: " \
           "`fd.l4proto = tcp`" in done.stdout
