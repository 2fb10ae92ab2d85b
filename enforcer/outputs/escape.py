"""Control characters in event fields, made visible: a command line or path is the
attacker's text, and written raw it can forge lines in a log or drive a terminal (ESC).

Control characters become escapes (`\\n`, `\\r`, `\\t`, `\\x1b`, `\\u2028`); everything else,
backslashes included, is left as it is, as Falco prints it.
"""

from __future__ import annotations

import re

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
