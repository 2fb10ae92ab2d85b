"""Customising the upstream rules the Falco way, with the upstream files unchanged plus a
small local file loaded after them: enabling a rule shipped disabled, disabling one, filling
a `user_known_*` placeholder macro, appending to a placeholder list."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

from tests.unit.clirun import run_cli, write_events

REPO = Path(__file__).resolve().parents[3]
UPSTREAM = REPO / "tests" / "data" / "falco-rules"
STABLE = UPSTREAM / "falco_rules.yaml"
ALL_FILES = [
    STABLE, UPSTREAM / "falco-incubating_rules.yaml", UPSTREAM / "falco-sandbox_rules.yaml"
]
CASES_DIR = REPO / "tests" / "data" / "events" / "stable"


def _event(file_prefix: str, index: int = 0) -> dict[str, Any]:
    path = next(CASES_DIR.glob(f"{file_prefix}_*.yaml"))
    return yaml.safe_load(path.read_text())["cases"][index]["event"]


def _rules_fired(tmp_path: Path, rules: list[Path], event: dict[str, Any]) -> list[str]:
    stream = write_events(tmp_path / "events.jsonl", [event])
    result = run_cli("replay", stream, "--rules", *rules)
    assert result.code == 0, result.stderr
    return [a["rule"] for a in result.alerts()]


def _local(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "falco_rules.local.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


HIDDEN_DIR = {
    "evt.type": "mkdirat", "evt.dir": "<", "evt.rawtime": 1763916000123456789,
    "evt.res": "SUCCESS", "evt.rawres": 0, "evt.arg.path": "/tmp/.cache-x", "evt.arg.mode": "0755",
    "proc.pid": 4100, "proc.name": "mkdir", "proc.exe": "mkdir", "proc.exepath": "/usr/bin/mkdir",
    "proc.cmdline": "mkdir /tmp/.cache-x", "proc.pname": "bash",
    "proc.aname": ["bash", "sshd", "sshd", "systemd"], "proc.tty": 34816,
    "user.name": "root", "user.uid": 0, "user.loginuid": 1000,
    "container.id": "host", "container.name": "host",
}
ENABLE_HIDDEN = """
    - rule: Create Hidden Files or Directories
      enabled: true
      override:
        enabled: replace
    """


def test_sandbox_rule_is_disabled_as_shipped(tmp_path: Path) -> None:
    assert "Create Hidden Files or Directories" not in _rules_fired(tmp_path, ALL_FILES, HIDDEN_DIR)


def test_enable_sandbox_rule_with_override(tmp_path: Path) -> None:
    local = _local(tmp_path, ENABLE_HIDDEN)
    report = run_cli("validate", *ALL_FILES, local, "--format", "json").json()
    assert report["errors"] == []
    shipped = run_cli("validate", *ALL_FILES, "--format", "json").json()
    assert report["enabled"] == shipped["enabled"] + 1
    assert report["rules"] == shipped["rules"]

    stream = write_events(tmp_path / "events.jsonl", [HIDDEN_DIR])
    result = run_cli("replay", stream, "--rules", *ALL_FILES, local)
    assert result.code == 0, result.stderr
    alerts = [a for a in result.alerts() if a["rule"] == "Create Hidden Files or Directories"]
    assert len(alerts) == 1
    assert alerts[0]["output"] == (
        "16:40:00.123456789: Notice Hidden file or directory created | file=<NA> newpath=<NA> "
        "evt_type=mkdirat user=root user_uid=0 user_loginuid=1000 process=mkdir "
        "proc_exepath=/usr/bin/mkdir parent=bash command=mkdir /tmp/.cache-x terminal=34816 "
        # Falco's shipped append_output: [{suggested_output: true}]
        "container_id=host container_name=host container_image_repository=<NA> "
        "container_image_tag=<NA> k8s_pod_name=<NA> k8s_ns_name=<NA>"
    )


def test_enable_sandbox_rule_with_legacy_standalone_enabled(tmp_path: Path) -> None:
    local = _local(tmp_path, """
        - rule: Create Hidden Files or Directories
          enabled: true
        """)
    report = run_cli("validate", *ALL_FILES, local, "--format", "json").json()
    assert report["errors"] == []
    assert any("deprecated" in (w["message"] if isinstance(w, dict) else w).lower()
               for w in report["warnings"])
    assert "Create Hidden Files or Directories" in _rules_fired(
        tmp_path, [*ALL_FILES, local], HIDDEN_DIR)


def test_disable_stable_rule_with_override(tmp_path: Path) -> None:
    event = _event("06")
    assert _rules_fired(tmp_path, [STABLE], event) == ["Terminal shell in container"]
    local = _local(tmp_path, """
        - rule: Terminal shell in container
          enabled: false
          override:
            enabled: replace
        """)
    assert _rules_fired(tmp_path, [STABLE, local], event) == []


def test_fill_user_known_macro(tmp_path: Path) -> None:
    """`user_known_read_sensitive_files_activities` is a never_true placeholder used by both
    sensitive-file rules; replacing its condition silences exactly the described activity."""
    event = _event("02")
    local = _local(tmp_path, """
        - macro: user_known_read_sensitive_files_activities
          condition: (proc.name = nginx and container.image.repository = docker.io/library/nginx)
          override:
            condition: replace
        """)
    assert _rules_fired(tmp_path, [STABLE, local], event) == []
    other = dict(event, **{"container.image.repository": "docker.io/library/httpd"})
    assert _rules_fired(tmp_path, [STABLE, local], other) == [
        "Read sensitive file trusted after startup", "Read sensitive file untrusted"]


def test_append_to_placeholder_list(tmp_path: Path) -> None:
    """known_ptrace_binaries is empty upstream and read through a macro defined after it."""
    event = _event("19")
    assert _rules_fired(tmp_path, [STABLE], event) == ["PTRACE attached to process"]
    local = _local(tmp_path, """
        - list: known_ptrace_binaries
          items: [gdb]
          override:
            items: append
        """)
    assert _rules_fired(tmp_path, [STABLE, local], event) == []


def test_append_exception_to_stable_rule(tmp_path: Path) -> None:
    event = _event("11")
    local = _local(tmp_path, """
        - rule: Remove Bulk Data from Disk
          exceptions:
            - name: dba_wipes_postgres
              fields: [proc.name, proc.cmdline]
              comps: [in, contains]
              values:
                - [[shred], /var/lib/postgresql/]
          override:
            exceptions: append
        """)
    assert _rules_fired(tmp_path, [STABLE, local], event) == []
    assert _rules_fired(tmp_path, [STABLE, local], _event("11", 1)) == [
        "Remove Bulk Data from Disk"]
