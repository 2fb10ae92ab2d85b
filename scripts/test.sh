#!/usr/bin/env bash
# The README's test command: sets the machine up (scripts/setup.sh), then runs the lint and
# the whole test suite, kernel path included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check enforcer actions tests
exec .venv/bin/python -m pytest -ra "$@"
