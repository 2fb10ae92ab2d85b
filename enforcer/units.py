"""Durations (`30s`, `1m`, `500ms`) and sizes (`50Mi`, `1G`): the one parser of each for
flags, ENFORCER_* variables, the config file and policy files.

Sizes read as Kubernetes quantities do, since that is what a DaemonSet's author writes in
`resources.limits.memory`: `K`, `M`, `G`, `T` are powers of 1000 and `Ki`, `Mi`, `Gi`, `Ti`
powers of 1024, so `1M` is 1 000 000 bytes and `1Mi` is 1 048 576 wherever it is written.
The unit's case does not matter (a byte count has no milli-, so `1m` is `1M`) and a
trailing `B` is allowed (`100kB`). Falco's own configuration has no size strings to match.

Durations are a number and an optional unit (`ms`, `s`, `m`, `h`, `d`); a bare number is
seconds, as in Falco's `-M SECONDS` and Kubernetes' probe timings."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

# The patterns are also the config file's JSON Schema patterns (enforcer.config.schema),
# so that the schema and the parser accept exactly the same strings.
DURATION_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$"
SIZE_PATTERN = r"(?i)^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
               "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """Seconds from `30s`, `1m`, `2h`, `500ms`, `1d` or a bare number of seconds; zero only
    with `allow_zero` (for the settings where 0 means "off").

    Raises ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 1m, 2h; got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        found = re.match(DURATION_PATTERN, str(value))
        if not found:
            raise ValueError(f"expected a duration such as 500ms, 30s, 1m, 2h, 1d; got {value!r}")
        seconds = float(found.group(1)) * _DURATION_UNITS[found.group(2)]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"a duration must be {'zero or ' if allow_zero else ''}positive; "
                         f"got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `50Mi`, `1G`, `512Ki`, `100kB` or a bare number of bytes (K/M/G/T are
    powers of 1000, Ki/Mi/Gi/Ti powers of 1024, as Kubernetes quantities).

    Raises ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 50Mi or 1G; got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        found = re.match(SIZE_PATTERN, str(value))
        if not found:
            raise ValueError(f"expected a size such as 512Ki, 50Mi, 1G (K, M, G: powers of "
                             f"1000; Ki, Mi, Gi: powers of 1024); got {value!r}")
        size = int(float(found.group(1)) * _SIZE_UNITS[(found.group(2) or "").lower()])
    if size <= 0:
        raise ValueError(f"a size must be positive; got {value!r}")
    return size


def _argument(parse: Callable[[object], object], what: str) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = what  # argparse names the type in its "invalid ... value" message
    return convert


size_argument = _argument(parse_size, "size")
"""argparse `type=` for sizes (flags and their ENFORCER_* defaults)."""
duration_argument = _argument(parse_duration, "duration")
"""argparse `type=` for positive durations."""
duration_or_zero_argument = _argument(lambda v: parse_duration(v, allow_zero=True), "duration")
"""argparse `type=` for durations where 0 means off."""
