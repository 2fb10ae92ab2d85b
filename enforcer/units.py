"""Durations (`30s`, `1m`, `500ms`) and sizes (`50Mi`, `1G`) as policy files write them."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]i?)?[Bb]?\s*$")
_SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
               "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_duration(value: object) -> float:
    """Seconds from `30s`, `1m`, `2h`, `500ms`, `1d` or a bare number of seconds.

    Raises ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 1m, 2h; got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        found = _DURATION.match(str(value))
        if not found:
            raise ValueError(f"expected a duration such as 500ms, 30s, 1m, 2h, 1d; got {value!r}")
        seconds = float(found.group(1)) * _DURATION_UNITS[found.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive; got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `50Mi`, `1G`, `512Ki`, `100kB` or a bare number of bytes.

    Raises ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 50Mi or 1G; got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        found = _SIZE.match(str(value))
        if not found:
            raise ValueError(f"expected a size such as 512Ki, 50Mi, 1G; got {value!r}")
        size = int(float(found.group(1)) * _SIZE_UNITS[(found.group(2) or "").lower()])
    if size <= 0:
        raise ValueError(f"a size must be positive; got {value!r}")
    return size
