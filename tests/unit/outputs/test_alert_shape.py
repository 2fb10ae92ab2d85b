"""Falco's output settings (json_include_*, time_format_iso_8601) shape every output's
alert as Falco 0.44 shapes it; the defaults leave Falco's default shape unchanged."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from enforcer.alert import Alert
from enforcer.outputs.formats import AlertShape, format_alert, json_bytes
from enforcer.outputs.program import ProgramConfig, ProgramOutput
from enforcer.outputs.stream import StreamOutput
from enforcer.outputs.webhook import WebhookConfig, WebhookOutput
from enforcer.priority import Priority

# 2026-12-07T17:44:43.000000123Z
T = 1796665483 * 1_000_000_000 + 123


def alert() -> Alert:
    return Alert(rule="R", priority=Priority.ERROR, output="shell spawned (proc=sh)",
                 output_fields={"proc.name": "sh", "evt.time": T}, time_ns=T,
                 tags=("b", "a"), hostname="node-1")


def test_the_default_shape_is_falcos_shipped_one() -> None:
    doc = json.loads(format_alert(alert(), "json", AlertShape()))
    assert doc == alert().falco_json()
    assert set(doc) == {"hostname", "output", "output_fields", "priority", "rule", "source",
                        "tags", "time"}
    assert format_alert(alert(), "text") == "17:44:43.000000123: Error shell spawned (proc=sh)"


@pytest.mark.parametrize(("shape", "missing", "added"), [
    (AlertShape(output=False), {"output"}, set()),
    (AlertShape(tags=False), {"tags"}, set()),
    (AlertShape(output_fields=False), {"output_fields"}, set()),
    (AlertShape(message=True), set(), {"message"}),
    (AlertShape(output=False, tags=False, output_fields=False, message=True),
     {"output", "tags", "output_fields"}, {"message"}),
])
def test_json_include_settings_drop_and_add_properties(shape: AlertShape, missing: set[str],
                                                       added: set[str]) -> None:
    full = set(alert().falco_json())
    doc = json.loads(format_alert(alert(), "json", shape))
    assert set(doc) == (full - missing) | added
    if "message" in added:  # the rule's output without time and priority
        assert doc["message"] == "shell spawned (proc=sh)"
    # the webhook and program outputs write the same document
    assert json.loads(json_bytes(alert(), shape)) == doc


def test_iso8601_changes_the_time_prefix_not_the_json_time() -> None:
    shape = AlertShape(iso8601=True)
    line = "2026-12-07T17:44:43.000000123+0000: Error shell spawned (proc=sh)"
    assert format_alert(alert(), "text", shape) == line
    doc = json.loads(format_alert(alert(), "json", shape))
    assert doc["output"] == line
    assert doc["time"] == "2026-12-07T17:44:43.000000123Z"
    assert doc["output_fields"]["evt.time.iso8601"] == "2026-12-07T17:44:43.000000123+0000"
    assert doc["output_fields"]["evt.time"] == T


class _Recorder(WebhookOutput):
    def __init__(self, shape: AlertShape):
        super().__init__(WebhookConfig("http://127.0.0.1:9/"), shape=shape)
        self.bodies: list[Any] = []

    def post(self, body: bytes) -> None:
        self.bodies.append(json.loads(body))


def test_every_output_takes_the_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    shape = AlertShape(tags=False, message=True, iso8601=True)
    stream = io.StringIO()
    StreamOutput("text", stream, shape=shape).emit(alert())
    assert stream.getvalue().startswith("2026-12-07T17:44:43.000000123+0000: Error")
    hook = _Recorder(shape)
    hook.emit(alert())
    assert "tags" not in hook.bodies[0] and hook.bodies[0]["message"]
    got = tmp_path / "program.out"
    program = ProgramOutput(ProgramConfig(("sh", "-c", f"cat >> {got}")), shape=shape)
    program.emit(alert())
    doc = json.loads(got.read_text())
    assert "tags" not in doc and doc["message"] == "shell spawned (proc=sh)"
