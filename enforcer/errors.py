"""The error hierarchy. Every error that reaches a user says what happened and what to do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a user's file, located precisely."""

    file: str
    line: int
    column: int
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "column": self.column,
                "message": self.message}


class EnforcerError(Exception):
    """Root of every error enforcer raises on purpose."""


class RuleError(EnforcerError):
    """Rules could not be loaded; `diagnostics` lists every problem found, located."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics) or "invalid rules")


class PolicyError(EnforcerError):
    """Response policies could not be loaded; `diagnostics` lists every problem, located."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics) or "invalid policies")


class ConfigError(EnforcerError):
    """The agent's configuration file is wrong; `diagnostics` lists every problem, located.
    A usage mistake: the agent exits 2."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics) or "invalid config")


class ProbeError(EnforcerError):
    """The eBPF probes could not be built or attached. `exit_code` is distinct per cause."""

    def __init__(self, message: str, exit_code: int = 3):
        self.exit_code = exit_code
        super().__init__(message)


class ActionError(EnforcerError):
    """An action failed. Only temporary errors are retried."""

    temporary = False


class PermanentActionError(ActionError):
    """Retrying cannot help (forbidden, invalid, not found where that matters)."""


class TemporaryActionError(ActionError):
    """Retrying may help (429, 5xx, timeout); `delay` is a server's hint in seconds."""

    temporary = True

    def __init__(self, message: str, delay: float | None = None):
        self.delay = delay
        super().__init__(message)
