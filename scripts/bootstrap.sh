#!/usr/bin/env bash
# Installs what Parley needs on a fresh machine. Idempotent; fast when everything is there.
#   scripts/bootstrap.sh python   the virtualenv with every extra (make run, make test)
#   scripts/bootstrap.sh system   Debian packages for the test services and browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

system() {
  local missing=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  if ((${#missing[@]})); then
    echo "bootstrap: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

python_env() {
  command -v uv >/dev/null 2>&1 || "$PYTHON" -m pip install -q uv
  [ -x "$VENV/bin/python" ] || uv venv -q "$VENV" -p "$PYTHON"
  # torch: the CPU wheel from /opt/wheels, never the CUDA build from the index.
  local links=()
  [ -d /opt/wheels ] && links=(--find-links /opt/wheels)
  uv pip install -q -p "$VENV/bin/python" "${links[@]}" -r requirements/torch-cpu.txt
  # llama.cpp compiles from source: portable, so the cached wheel runs on any x86-64.
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" \
    uv pip install -q -p "$VENV/bin/python" "${links[@]}" -e '.[all,dev]'
}

case "${1:-python}" in
  python) python_env ;;
  system) system ;;
  all) system; python_env ;;
  *) echo "usage: $0 python|system|all" >&2; exit 2 ;;
esac
