# One task runner: the README and CI call these targets.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system run cluster test lint format bench clean

$(VENV)/.installed: pyproject.toml requirements/torch-cpu.txt requirements/local.txt requirements/local-excludes.txt scripts/bootstrap.sh
	scripts/bootstrap.sh python
	$(PY) -m parley.knowledge.minilm_onnx
	touch $@

install: $(VENV)/.installed

system:
	scripts/bootstrap.sh system

# The server with the example configuration (examples/parley.toml: seed 003's prompt
# demo experiment, an assistant with its own notes); `make run PARLEY_CONFIG_FILE=my.toml` for yours.
# The demo knowledge of `support` and `recruiter` is the server's own default.
PARLEY_CONFIG_FILE ?= examples/parley.toml

run: install
	@echo "make: the parley command is $(VENV)/bin/parley (or: source $(VENV)/bin/activate)" >&2
	PARLEY_CONFIG_FILE='$(PARLEY_CONFIG_FILE)' $(VENV)/bin/parley serve

# A local cluster: throwaway PostgreSQL + Redis, two API processes, two workers (docs/DEPLOY.md).
cluster: system install
	scripts/cluster.sh

lint: install
	$(PY) -m ruff check parley tests bench
	$(PY) -m ruff format --check parley tests bench
	$(PY) -m mypy

format: install
	$(PY) -m ruff check --fix parley tests bench
	$(PY) -m ruff format parley tests bench

test: system install lint
	scripts/test.sh $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .parley .pytest_cache .mypy_cache .ruff_cache test-artifacts
