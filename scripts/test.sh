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
"$VENV/bin/python" -m pytest -n "${PARLEY_TEST_WORKERS:-3}" --durations=10 "$@"
