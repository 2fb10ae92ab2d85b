#!/usr/bin/env bash
# The README's test command: sets the machine up (scripts/setup.sh), then runs the lint and
# the whole test suite, kernel path included, and fails if the suite left a process, mount,
# network namespace, container or file of its own behind (scripts/leftovers.py). Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check enforcer actions tests
# The run's mark (inherited by every process the tests start, carried by the names of their
# containers and namespaces) and its own temp dir (pytest's temp dirs, every tempfile).
SUITE_RUN_MARK="$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
RUNDIR="$(mktemp -d "/tmp/enforcer-suite-$SUITE_RUN_MARK-XXXXXX")"
# Others may pass through, not list: tests run some processes as other users (PostgreSQL's
# server as postgres, the blast-radius tests' readers as their own uids) in dirs of their own
# inside it, whose names are random.
chmod 0711 "$RUNDIR"
export SUITE_RUN_MARK
trap 'rm -rf --one-file-system "$RUNDIR"' EXIT
python3 scripts/leftovers.py snapshot "$RUNDIR/state.json" "$SUITE_RUN_MARK" "$RUNDIR"
status=0
TMPDIR="$RUNDIR" .venv/bin/python -m pytest -ra "$@" || status=$?
if ! python3 scripts/leftovers.py check "$RUNDIR/state.json" && [ "$status" -eq 0 ]; then
    status=1
fi
exit "$status"
