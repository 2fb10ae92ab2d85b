"""Alert outputs that write lines: to a stream (stdout) or appended to a file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from enforcer.alert import Alert
from enforcer.outputs.formats import FALCO_DEFAULT_SHAPE, AlertShape, format_alert


class StreamOutput:
    """Writes each alert as one line to a text stream (default: stdout)."""

    def __init__(self, fmt: str = "json", stream: TextIO | None = None,
                 shape: AlertShape = FALCO_DEFAULT_SHAPE):
        self.fmt = fmt
        self.shape = shape
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, alert: Alert) -> None:
        self.stream.write(format_alert(alert, self.fmt, self.shape) + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()


class FileOutput(StreamOutput):
    """Appends each alert as one line to a file (created if missing), flushed per alert."""

    def __init__(self, path: str | Path, fmt: str = "json",
                 shape: AlertShape = FALCO_DEFAULT_SHAPE):
        self.path = Path(path)
        super().__init__(fmt, open(self.path, "a", encoding="utf-8"),  # closed by close()
                         shape)

    def emit(self, alert: Alert) -> None:
        super().emit(alert)
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()
