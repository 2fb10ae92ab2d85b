"""How one alert is written: Falco's JSON line or Falco's text line, shaped by Falco's
output settings (`json_include_*`, `time_format_iso_8601`) as Falco 0.44 applies them:

- the text line, and the JSON `output` that repeats it, start with the event time as
  `HH:MM:SS.nnnnnnnnn` (Falco's `%evt.time`) or, with `time_format_iso_8601`, as
  `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn+0000` (Falco's `%evt.time.iso8601`, always UTC);
- JSON `time` is RFC 3339 UTC with nanoseconds whatever the setting (Falco's too);
- `json_include_output_property: false` drops `output`, `..._tags_property: false` drops
  `tags`, `..._output_fields_property: false` drops `output_fields` (static fields and
  append_output fields with it), `..._message_property: true` adds `message`, the rule's
  output without the time and priority prefix;
- the prefix's field lands in `output_fields` as Falco's does: `evt.time` (ns) always, and
  `evt.time.iso8601` as well with `time_format_iso_8601` (Falco would keep `evt.time` only
  when the rule's output names it; we keep it always, as a number, for the readers that
  sort on it).

The shape only changes what outputs write: policies, the responder, the audit log and the
store always see the whole alert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from enforcer.alert import Alert
from enforcer.outputs.escape import escape_control

FORMATS = ("json", "text")


@dataclass(frozen=True)
class AlertShape:
    """Falco's output settings; the defaults are Falco 0.44's shipped ones."""

    output: bool = True           # json_include_output_property
    output_fields: bool = True    # json_include_output_fields_property
    tags: bool = True             # json_include_tags_property
    message: bool = False         # json_include_message_property
    iso8601: bool = False         # time_format_iso_8601

    def text_line(self, alert: Alert) -> str:
        """Falco's console line: `TIME: Priority output`."""
        if not self.iso8601:
            return alert.text_line
        return f"{iso8601(alert.time_ns)}: {alert.priority.display} {alert.output}"

    def document(self, alert: Alert) -> dict[str, Any]:
        """The alert as Falco's json_output writes it under these settings."""
        doc = alert.falco_json()
        if self.output:
            doc["output"] = self.text_line(alert)
        else:
            del doc["output"]
        if not self.tags:
            del doc["tags"]
        if self.message:
            doc["message"] = alert.output
        if not self.output_fields:
            del doc["output_fields"]
        elif self.iso8601:
            doc["output_fields"] = {**doc["output_fields"],
                                    "evt.time.iso8601": iso8601(alert.time_ns)}
        return doc


FALCO_DEFAULT_SHAPE = AlertShape()


def iso8601(time_ns: int) -> str:
    """Falco's %evt.time.iso8601: UTC, nanoseconds, numeric zone (`+0000`)."""
    secs, nanos = divmod(time_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}+0000"


def format_alert(alert: Alert, fmt: str = "json",
                 shape: AlertShape = FALCO_DEFAULT_SHAPE) -> str:
    """One line (without newline) for an alert, in Falco's json_output or text form."""
    if fmt == "text":
        # Field values (command lines, paths) are the attacker's text: one line, inert.
        return escape_control(shape.text_line(alert))
    if fmt == "json":
        return json.dumps(shape.document(alert), ensure_ascii=False, default=str)
    raise ValueError(f"unknown alert format {fmt!r}: expected one of {', '.join(FORMATS)}")


def json_bytes(alert: Alert, shape: AlertShape = FALCO_DEFAULT_SHAPE) -> bytes:
    """The alert's Falco JSON, compact, for the webhook and program outputs."""
    return json.dumps(shape.document(alert), separators=(",", ":")).encode()
