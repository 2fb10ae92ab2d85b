"""Control characters in event fields never reach a text line raw."""

from __future__ import annotations

import io
import logging

import pytest

from enforcer.alert import Alert
from enforcer.outputs.escape import EscapingFormatter, escape_control
from enforcer.outputs.formats import format_alert
from enforcer.priority import Priority


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain /usr/bin/ls -la", "plain /usr/bin/ls -la"),
    ("a\nb", "a\\nb"), ("a\r\nb", "a\\r\\nb"), ("tab\there", "tab\\there"),
    ("\x1b[2Jclear", "\\x1b[2Jclear"), ("bell\x07", "bell\\x07"), ("nul\x00", "nul\\x00"),
    ("del\x7f", "del\\x7f"), ("c1\x9b31m", "c1\\x9b31m"),
    ("line\u2028sep", "line\\u2028sep"), ("back\\slash", "back\\slash"),
    ("ünïcødé ✓", "ünïcødé ✓"),
])
def test_escape_control(raw: str, shown: str) -> None:
    assert escape_control(raw) == shown


def test_text_format_is_one_inert_line() -> None:
    alert = Alert(rule="r", priority=Priority.WARNING,
                  output="cmdline=cat x\n00:00:00.000000000: Critical forged\x1b[2J",
                  output_fields={}, time_ns=0)
    line = format_alert(alert, "text")
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith("cmdline=cat x\\n00:00:00.000000000: Critical forged\\x1b[2J")
    # JSON keeps the value as it is (JSON escapes it itself).
    assert "\\n00:00:00" in format_alert(alert, "json")


def test_log_messages_are_escaped_and_tracebacks_kept() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("enforcer.test.escape")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("killed pid 7 cmdline=%s", "sh -c 'x'\nWARNING forged\x1b]0;title\x07")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed on %s", "a\nb")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == ("WARNING killed pid 7 cmdline=sh -c 'x'\\nWARNING forged"
                        "\\x1b]0;title\\x07")
    assert lines[1] == "ERROR failed on a\\nb"
    assert lines[2].startswith("Traceback") and lines[-1] == "ValueError: boom"
