"""Where the bundled BPF sources and default policies are, in a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _bundled(checkout_dir: str, package: str) -> Path:
    local = _CHECKOUT / checkout_dir
    if local.is_dir() and (_CHECKOUT / "pyproject.toml").is_file():
        return local
    # Installed: setup.py maps the top-level directory to enforcer/<_name>. It has no
    # __init__.py, so importlib.resources would hand back a MultiplexedPath, not a path.
    return _PACKAGE / package.rsplit(".", 1)[1]


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
