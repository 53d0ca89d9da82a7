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
"$VENV/bin/python" -m pytest "$@"
