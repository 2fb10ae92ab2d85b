"""Run the `enforcer` CLI in-process for black-box tests: same argv, exit code, stdout and
stderr as the console script, without paying for a Python start-up per case."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enforcer.cli.main import main


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def alerts(self) -> list[dict[str, Any]]:
        """stdout of `enforcer replay`: one Falco JSON alert per line."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def run_cli(*argv: str | Path) -> CliResult:
    """Call `enforcer.cli.main.main(argv)`, capturing what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return CliResult(int(code or 0), out.getvalue(), err.getvalue())


def write_events(path: Path, events: list[dict[str, Any]]) -> Path:
    """Write events in the replay format (one flat JSON object per line)."""
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path
