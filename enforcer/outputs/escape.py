"""Control characters in event fields, made visible: a command line or path is the
attacker's text, and written raw it can forge lines in a log or drive a terminal (ESC).

Control characters become escapes (`\\n`, `\\r`, `\\t`, `\\x1b`, `\\u2028`); everything else,
backslashes included, is left as it is, as Falco prints it.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """`text` with every control character written as an escape; one line, inert."""
    return _CONTROL.sub(_escape, text) if _CONTROL.search(text) else text


class EscapingFormatter(logging.Formatter):
    """A log formatter whose messages are one line each: control characters in what a
    message quotes (event fields, request paths) are escaped; tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return escape_control(super().formatMessage(record))


def install_log_escaping(stream: TextIO | None = None) -> None:
    """Log WARNING and above to stderr (as Python does with no handler), each message on one
    line with its control characters escaped. Idempotent."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, EscapingFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(EscapingFormatter("%(message)s"))
    handler.setLevel(logging.WARNING)
    root.addHandler(handler)
