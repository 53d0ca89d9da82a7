#!/usr/bin/env bash
# The whole suite: lint, types, then tests against SQLite and a throwaway PostgreSQL + Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
eval "$(scripts/services.sh start)"
trap 'scripts/services.sh stop "$SERVICES_DIR"' EXIT
export PARLEY_TEST_REQUIRE_SERVICES=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The suite starts many `parley` subprocesses: let them reuse compiled bytecode.
unset PYTHONDONTWRITEBYTECODE
# Workers: most tests wait on servers, streams and subprocesses, so three share two cores well
# (the whole suite: 10 min with three, 16 min in one process, on the 2-core development machine).
# Tests that time the server's stalls (marked `alone`) run after, one at a time: what they
# measure is the server, not two other test workers' servers sharing its two cores.
run() {
    local status=0
    "$VENV/bin/python" -m pytest "$@" || status=$?
    [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"  # 5: none selected (a narrowed run)
}
run -n "${PARLEY_TEST_WORKERS:-3}" --durations=10 -m "not alone" "$@"
run --durations=5 -m alone "$@"
