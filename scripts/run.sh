#!/usr/bin/env bash
# The README's run command: sets the machine up, then runs the live agent on this host in
# dry-run with the bundled default rules and policies (alerts on stdout, audit log in
# /var/log/enforcer/audit.jsonl, /metrics /healthz /readyz on :9376). Extra arguments go to
# `enforcer` and win over these (e.g. --http-addr 127.0.0.1:9999, --ui --store FILE).
# Stop it with Ctrl-C: it prints Falco's summary and the responses by action and outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/enforcer --dry-run "$@"
