#!/usr/bin/env bash
# The README's run command: sets the machine up, then runs the agent on this host in
# dry-run with the bundled default rules and policies. Extra arguments go to `enforcer`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/enforcer --dry-run "$@"
