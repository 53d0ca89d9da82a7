# One task runner: the README and CI call these targets.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system run cluster test lint format bench clean

$(VENV)/.installed: pyproject.toml requirements/torch-cpu.txt requirements/local.txt scripts/bootstrap.sh
	scripts/bootstrap.sh python
	touch $@

install: $(VENV)/.installed

system:
	scripts/bootstrap.sh system

# The demo knowledge of the `support` and `recruiter` assistants, synced when the server starts.
DEMO_CVS ?= .parley/demo-cvs
PARLEY_KNOWLEDGE ?= {"parley-faq": ["parley/knowledge/demo/parley-faq.md"], "demo-cvs": ["$(DEMO_CVS)"]}

$(DEMO_CVS): scripts/make_demo_cvs.py | $(VENV)/.installed
	$(PY) scripts/make_demo_cvs.py $@

run: install $(DEMO_CVS)
	PARLEY_KNOWLEDGE='$(PARLEY_KNOWLEDGE)' $(VENV)/bin/parley serve

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
