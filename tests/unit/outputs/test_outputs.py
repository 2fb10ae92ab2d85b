"""Alert outputs (JSON/text lines, stream and file) and Falco's end-of-run summary."""

from __future__ import annotations

import io
import json

import pytest

from enforcer.alert import Alert
from enforcer.outputs.formats import format_alert
from enforcer.outputs.stream import FileOutput, StreamOutput
from enforcer.outputs.summary import AlertStats
from enforcer.priority import Priority


def alert(rule="R", prio=Priority.WARNING) -> Alert:
    return Alert(rule=rule, priority=prio, output="x=1", output_fields={"x": 1, "y": None},
                 time_ns=1_700_000_000_000_000_001, tags=("b", "a"), hostname="h")


def test_json_line_is_falco_shape():
    doc = json.loads(format_alert(alert()))
    assert doc == {"hostname": "h", "output": "22:13:20.000000001: Warning x=1",
                   "output_fields": {"x": 1, "y": None}, "priority": "Warning", "rule": "R",
                   "source": "syscall", "tags": ["a", "b"],
                   "time": "2023-11-14T22:13:20.000000001Z"}


def test_text_line():
    assert format_alert(alert(), "text") == "22:13:20.000000001: Warning x=1"
    with pytest.raises(ValueError):
        format_alert(alert(), "xml")


def test_stream_and_file_outputs(tmp_path):
    buf = io.StringIO()
    out = StreamOutput("text", buf)
    out.emit(alert())
    assert buf.getvalue() == "22:13:20.000000001: Warning x=1\n"
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"earlier": true}\n')
    f = FileOutput(path)
    f.emit(alert())
    assert len(path.read_text().splitlines()) == 2  # appended, flushed per alert
    f.emit(alert("S"))
    f.close()
    assert json.loads(path.read_text().splitlines()[-1])["rule"] == "S"


def test_summary_format():
    stats = AlertStats()
    assert stats.format() == ("Events detected: 0\nRule counts by severity:\n"
                              "Triggered rules by rule name:\n")
    for a in (alert("B", Priority.NOTICE), alert("A", Priority.CRITICAL),
              alert("B", Priority.NOTICE), alert("C", Priority.INFORMATIONAL)):
        stats.record(a)
    assert stats.format() == (
        "Events detected: 4\nRule counts by severity:\n   CRITICAL: 1\n   NOTICE: 2\n"
        "   INFO: 1\nTriggered rules by rule name:\n   B: 2\n   A: 1\n   C: 1\n")
    ordered = AlertStats(rule_order=["C", "A", "B"])
    for a in (alert("B"), alert("A"), alert("C"), alert("Z")):
        ordered.record(a)
    assert ordered.format().endswith("name:\n   C: 1\n   A: 1\n   B: 1\n   Z: 1\n")
