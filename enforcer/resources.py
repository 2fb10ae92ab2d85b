"""Where the bundled BPF sources and default policies are, in a checkout or an installed wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _bundled(checkout_dir: str, package: str) -> Path:
    local = _CHECKOUT / checkout_dir
    if local.is_dir() and (_CHECKOUT / "pyproject.toml").is_file():
        return local
    return Path(str(resources.files(package)))


def bpf_dir() -> Path:
    """Directory holding the BPF C sources that bcc compiles at start-up."""
    return _bundled("bpf", "enforcer._bpf")


def policies_dir() -> Path:
    """Directory holding the default rules (policies/rules) and response policies."""
    return _bundled("policies", "enforcer._policies")


def default_rules_dir() -> Path:
    """The bundled Falco-format rule files."""
    return policies_dir() / "rules"


def default_responses_dir() -> Path:
    """The bundled response policies."""
    return policies_dir() / "responses"
