"""`enforcer validate`, `replay`, `fields` and `rules list`, run as a user would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data" / "falco-rules"
STABLE = DATA / "falco_rules.yaml"


@pytest.fixture
def run(enforcer_cmd, cli_env):
    def _run(*args, stdin=None):
        return subprocess.run([*enforcer_cmd, *map(str, args)], capture_output=True,
                              text=True, env=cli_env, input=stdin, timeout=120)
    return _run


def test_validate_upstream_files(run):
    res = run("validate", STABLE, DATA / "falco-incubating_rules.yaml",
              DATA / "falco-sandbox_rules.yaml")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "93 rules, 315 macros, 118 lists\n"


def test_validate_json(run):
    res = run("validate", "--format", "json", STABLE)
    assert res.returncode == 0
    assert json.loads(res.stdout) == {"rules": 25, "macros": 87, "lists": 49, "enabled": 25,
                                      "errors": [], "warnings": []}


def test_validate_reports_every_problem(run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: a\n  desc: d\n  condition: evt.type = open and\n  output: o\n"
                   "  priority: INFO\n"
                   "- rule: b\n  desc: d\n  condition: proc.colour = red\n  output: o\n"
                   "  priority: INFO\n")
    res = run("validate", bad)
    assert res.returncode == 1
    lines = [line for line in res.stdout.splitlines() if line.startswith(str(bad))]
    assert len(lines) == 2
    assert lines[0].startswith(f"{bad}:3:")
    assert lines[1].startswith(f"{bad}:8:14: rule 'b': ")
    assert len(res.stdout.splitlines()) == 2  # one line per problem
    # --show-source adds the source line and a caret under the column
    res = run("validate", "--show-source", bad)
    out = res.stdout.splitlines()
    at = out.index(lines[1])
    assert out[at + 1] == "      condition: proc.colour = red"
    assert out[at + 2] == "    " + " " * 13 + "^"
    res = run("validate", "--format", "json", bad)
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and len(doc["errors"]) == 2
    assert set(doc["errors"][0]) == {"file", "line", "column", "message"}


def test_validate_warnings_on_stderr(run, tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("- list: unused\n  items: [a]\n")
    res = run("validate", f)
    assert res.returncode == 0
    assert res.stdout == "0 rules, 0 macros, 1 lists\n"
    assert f"{f}:1:3: warning: list 'unused': List not referred to" in res.stderr


def test_validate_missing_path_is_a_usage_error(run, tmp_path):
    res = run("validate", tmp_path / "nope.yaml")
    assert res.returncode == 2 and "no such file" in res.stderr


EVENTS = [
    {"evt.type": "openat", "evt.dir": "<", "proc.name": "cat", "fd.name": "/etc/shadow",
     "evt.is_open_read": True, "fd.typechar": "f", "fd.num": 3, "container.id": "host",
     "proc.aname": ["bash", "sshd"], "user.name": "root",
     "evt.rawtime": 1_700_000_000_123_456_789},
    {"evt.type": "openat", "proc.name": "cat", "fd.name": "/etc/hosts",
     "evt.is_open_read": True, "fd.typechar": "f", "fd.num": 3},
]


def test_replay_json_alerts_and_summary(run, tmp_path):
    ev = tmp_path / "ev.jsonl"
    ev.write_text("\n".join(json.dumps(e) for e in EVENTS) + "\n{bad\n\n[1]\n")
    res = run("replay", ev, "--rules", STABLE, "--hostname", "node1")
    assert res.returncode == 0, res.stderr
    alerts = [json.loads(line) for line in res.stdout.splitlines()]
    assert [a["rule"] for a in alerts] == ["Read sensitive file untrusted"]
    a = alerts[0]
    assert a["hostname"] == "node1" and a["priority"] == "Warning"
    assert a["time"] == "2023-11-14T22:13:20.123456789Z"
    assert a["output"].startswith("22:13:20.123456789: Warning Sensitive file opened for "
                                  "reading by non-trusted program | file=/etc/shadow "
                                  "gparent=sshd ggparent=<NA>")
    assert a["output_fields"]["proc.aname[2]"] == "sshd"
    assert a["output_fields"]["user.uid"] is None
    assert "maturity_stable" in a["tags"] and a["source"] == "syscall"
    assert f"{ev}:3:2: invalid JSON" in res.stderr
    assert f"{ev}:5:1: an event must be a JSON object" in res.stderr
    assert res.stderr.endswith(
        "Events detected: 1\nRule counts by severity:\n   WARNING: 1\n"
        "Triggered rules by rule name:\n   Read sensitive file untrusted: 1\n")


def test_replay_text_format_from_stdin(run):
    res = run("replay", "-", "--rules", STABLE, "--format", "text",
              stdin=json.dumps(EVENTS[0]) + "\n")
    assert res.returncode == 0
    assert res.stdout.startswith("22:13:20.123456789: Warning Sensitive file opened")


def test_replay_with_invalid_rules(run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- macro: m\n  condition: (\n")
    ev = tmp_path / "ev.jsonl"
    ev.write_text("{}\n")
    res = run("replay", ev, "--rules", bad)
    assert res.returncode == 1 and f"{bad}:2:" in res.stderr


def test_replay_default_rules_are_the_bundled_ones(run, tmp_path):
    ev = tmp_path / "ev.jsonl"
    ev.write_text(json.dumps(EVENTS[0]) + "\n")
    res = run("replay", ev)
    assert res.returncode == 0 and "Read sensitive file untrusted" in res.stdout


def test_fields(run):
    res = run("fields")
    assert res.returncode == 0
    rows = {line.split()[0]: line.split()[1] for line in res.stdout.splitlines()}
    assert rows["proc.name"] == "string" and rows["fd.sip"] == "ipaddr"
    assert rows["fd.snet"] == "ipnet" and rows["evt.is_open_read"] == "bool"
    doc = json.loads(run("fields", "--format", "json").stdout)
    assert {"name": "fd.num", "type": "number"}.items() <= doc[[d["name"] for d in doc]
                                                               .index("fd.num")].items()


def test_rules_list(run):
    res = run("rules", "list", "--rules", STABLE)
    assert res.returncode == 0
    first = res.stdout.splitlines()[0].split("\t")
    assert first[0] == "Directory traversal monitored file read"
    assert first[1:3] == ["Warning", "enabled"]
    assert first[4] == "open,openat,openat2"
    doc = json.loads(run("rules", "list", "--rules", STABLE, "--format", "json").stdout)
    assert len(doc) == 25
    assert set(doc[0]) >= {"name", "priority", "enabled", "tags", "event_types"}


def test_rules_from_environment(enforcer_cmd, cli_env, tmp_path):
    f = tmp_path / "one.yaml"
    f.write_text("- rule: only\n  desc: d\n  condition: evt.type = execve\n  output: o\n"
                 "  priority: DEBUG\n  tags: [t]\n")
    env = {**cli_env, "ENFORCER_RULES": str(f)}
    res = subprocess.run([*enforcer_cmd, "rules", "list"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0
    assert res.stdout == "only\tDebug\tenabled\tt\texecve\n"


def test_replay_survives_undecodable_bytes(run, tmp_path):
    ev = tmp_path / "ev.jsonl"
    ev.write_bytes(b'{"evt.type": "x\xff\xfe"}\n\xff\xfe\n' + json.dumps(EVENTS[0]).encode()
                   + b"\n")
    res = run("replay", ev, "--rules", STABLE)
    assert res.returncode == 0 and "Traceback" not in res.stderr
    assert f"{ev}:2:1: invalid JSON" in res.stderr
    assert len(res.stdout.splitlines()) == 1
