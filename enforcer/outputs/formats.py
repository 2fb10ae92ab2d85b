"""How one alert is written: Falco's JSON line or Falco's text line."""

from __future__ import annotations

import json

from enforcer.alert import Alert
from enforcer.outputs.escape import escape_control

FORMATS = ("json", "text")


def format_alert(alert: Alert, fmt: str = "json") -> str:
    """One line (without newline) for an alert, in Falco's json_output or text form."""
    if fmt == "text":
        # Field values (command lines, paths) are the attacker's text: one line, inert.
        return escape_control(alert.text_line)
    if fmt == "json":
        return json.dumps(alert.falco_json(), ensure_ascii=False, default=str)
    raise ValueError(f"unknown alert format {fmt!r}: expected one of {', '.join(FORMATS)}")
