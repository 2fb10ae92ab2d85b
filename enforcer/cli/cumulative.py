"""Options that add up: `-r A -r B` and `-r A B` both load A then B.

Falco users repeat `-r` every day; argparse's plain `nargs="+"` keeps only the last
occurrence, silently dropping the others. The first occurrence on a command line replaces
the default (the config file's `rules_files`, an ENFORCER_* list), as Falco's `-r` replaces
`rules_files`; later ones append."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

_SEEN = "_cumulative_seen"


class Cumulative(argparse.Action):
    """argparse action (`nargs="+"`) accumulating every occurrence, in order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        seen: set[str] = namespace.__dict__.setdefault(_SEEN, set())
        current = list(getattr(namespace, self.dest, None) or []) if self.dest in seen else []
        seen.add(self.dest)
        if isinstance(values, str) or values is None:
            values = [] if values is None else [values]
        setattr(namespace, self.dest, current + list(values))
