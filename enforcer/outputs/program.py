"""Program output: pipes each alert's JSON, one line, to a command's stdin.

The command is an argv list fixed when the agent starts; it is executed directly (no shell),
and nothing from an event ever becomes part of a command line: event data travels only as
JSON on stdin. By default one process per alert (Falco's program_output); with
`keep_alive` one long-lived process reads one alert per line, and is restarted if it exits.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import threading
from dataclasses import dataclass

from enforcer.alert import Alert
from enforcer.outputs.formats import FALCO_DEFAULT_SHAPE, AlertShape, json_bytes


class ProgramError(Exception):
    """The program failed to take an alert."""


def parse_argv(text: str) -> tuple[str, ...]:
    """The operator's command, given as a JSON array (`["jq", "-c", "."]`) or as words split
    the way a shell splits them, without any expansion (`jq -c .`). Raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        try:
            argv = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"program output {text!r} is not a valid JSON array: "
                             f"{exc.msg} at column {exc.colno}") from None
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("program output JSON must be an array of strings")
    else:
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise ValueError(f"program output {text!r}: {exc}") from None
    if not argv:
        raise ValueError("program output needs a command, e.g. '[\"logger\", \"-t\", "
                         "\"enforcer\"]'")
    return tuple(argv)


@dataclass(frozen=True)
class ProgramConfig:
    argv: tuple[str, ...]
    keep_alive: bool = False
    timeout: float = 10.0  # seconds per alert (one-shot mode)

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) and a for a in self.argv):
            raise ValueError("program output argv must be a non-empty list of non-empty "
                             "strings")
        if shutil.which(self.argv[0]) is None:
            raise ValueError(f"program output: command {self.argv[0]!r} not found "
                             "(give an absolute path or put it on PATH)")


class ProgramOutput:
    """Runs `config.argv` and writes each alert's Falco JSON as one line to its stdin."""

    def __init__(self, config: ProgramConfig, name: str = "program",
                 shape: AlertShape = FALCO_DEFAULT_SHAPE):
        self.config = config
        self.shape = shape
        self.name = name
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def line(self, alert: Alert) -> bytes:
        return json_bytes(alert, self.shape) + b"\n"

    def emit(self, alert: Alert) -> None:
        data = self.line(alert)
        if self.config.keep_alive:
            self._write_kept(data)
        else:
            self._run_once(data)

    def _run_once(self, data: bytes) -> None:
        try:
            done = subprocess.run(list(self.config.argv), input=data,  # noqa: S603 - argv
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=self.config.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ProgramError(f"{self._cmd()} did not finish within "
                               f"{self.config.timeout:g}s; killed") from None
        except OSError as exc:
            raise ProgramError(f"{self._cmd()} could not start: {exc}") from exc
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-300:]
            raise ProgramError(f"{self._cmd()} exited with {done.returncode}"
                               + (f": {tail}" if tail else ""))

    def _write_kept(self, data: bytes) -> None:
        with self._lock:
            for attempt in (1, 2):  # one restart if the program died since the last alert
                proc = self._proc
                if proc is None or proc.poll() is not None:
                    proc = self._proc = self._spawn()
                assert proc.stdin is not None
                try:
                    proc.stdin.write(data)
                    proc.stdin.flush()
                    return
                except (BrokenPipeError, OSError) as exc:
                    self._proc = None
                    if attempt == 2:
                        raise ProgramError(f"{self._cmd()} is not reading its input: "
                                           f"{exc}") from exc

    def _spawn(self) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(list(self.config.argv),  # noqa: S603 - fixed argv
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        except OSError as exc:
            raise ProgramError(f"{self._cmd()} could not start: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=self.config.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _cmd(self) -> str:
        return f"program output {shlex.join(self.config.argv)!r}"

