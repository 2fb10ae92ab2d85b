"""Static fields added to every alert, as Falco's `append_output` and Falcosidekick's
`customfields` do: `--extra-field environment=production` puts `"environment":
"production"` into each alert's `output_fields`."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

from enforcer.alert import Alert

# Falco field names and the plain keys Falcosidekick users write both fit this.
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-\[\]]*$")


def parse_extra_fields(items: Iterable[str]) -> dict[str, str]:
    """`["environment=production", "team=sec"]` -> dict. Raises ValueError with advice."""
    fields: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"extra field {item!r} is not KEY=VALUE; write e.g. "
                             "--extra-field environment=production")
        if not _KEY.match(key):
            raise ValueError(f"extra field name {key!r} may only hold letters, digits, "
                             "'_', '.', '-', '[' and ']', and must start with a letter or '_'")
        fields[key] = value
    return fields


def with_extra_fields(alert: Alert, fields: Mapping[str, str]) -> Alert:
    """The alert with `fields` added to output_fields; the rule's own fields win on clash,
    so a static label can never mask what the event said."""
    if not fields:
        return alert
    merged = dict(fields)
    merged.update(alert.output_fields)
    return dataclasses.replace(alert, output_fields=merged)
