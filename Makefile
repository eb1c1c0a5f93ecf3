# retentio: `make run` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 3000

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv
	@$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install retentio with its dev tools (idempotent)

run: setup ## main job on embedded defaults: synthesise -> check -> features -> train -> promote -> at-risk -> serve
	@bash scripts/run.sh

test: setup ## the whole test suite (what CI runs)
	@bash scripts/ensure_postgres.sh
	@$(BIN)/python -m pytest

test-fast: setup ## unit tests only (no slow or e2e suites)
	@bash scripts/ensure_postgres.sh
	@$(BIN)/python -m pytest -m "not slow and not e2e"

lint: setup ## ruff: lint and format check
	@$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup ## ruff: fix and format
	@$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: setup ## benchmarks (figures go to bench/out and BENCHMARKS.md); not part of `test`
	@bash bench/run_all.sh

serve: setup ## serve the champions on PORT (default 3000)
	@$(BIN)/retentio serve --port $(PORT)

ui: setup ## open the MLflow UI on the embedded store (http://127.0.0.1:5000)
	@$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000

clean: ## remove generated data, stores, caches (keeps .venv)
	@rm -rf artifacts data mlruns bench/out .pytest_cache .ruff_cache .hypothesis
	@find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

.PHONY: help setup run test test-fast lint format bench serve ui clean
