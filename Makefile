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

# --compile-bytecode: every command then imports pandas, pyarrow, ... from bytecode instead of
# compiling them (a light command such as `retentio at-risk` on persisted scores pays ~4x more
# CPU at start-up without it when Python may not write __pycache__)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv
	@$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install retentio with its dev tools (idempotent)

run: setup ## main job on embedded defaults: synthesise -> check -> features -> train -> promote -> at-risk -> serve
	@bash scripts/run.sh

test: setup ## the whole test suite (what CI runs)
	@bash scripts/ensure_postgres.sh
	@bash scripts/ensure_chromium.sh
	@$(BIN)/python -m pytest --durations=25

test-fast: setup ## unit tests only (no slow or e2e suites)
	@bash scripts/ensure_postgres.sh
	@$(BIN)/python -m pytest -m "not slow and not e2e"

lint: setup ## ruff: lint and format check
	@$(BIN)/ruff check . && $(BIN)/ruff format --check .

# mypy and import-linter cannot follow setuptools' package-dir mapping of the editable install:
# both read a link tree of the installed namespace (.typecheck/retentio, scripts/link_tree.py)
imports: setup ## import-linter: the layer contract of pyproject.toml
	@$(BIN)/python scripts/link_tree.py >/dev/null
	@cd .typecheck && ../$(BIN)/lint-imports ../pyproject.toml

typecheck: setup ## mypy on the installed namespace
	@$(BIN)/python scripts/link_tree.py >/dev/null
	@MYPYPATH=.typecheck $(BIN)/mypy -p retentio

check: lint imports typecheck ## lint, the import contract and the type check (CI runs these)

format: setup ## ruff: fix and format
	@$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: setup ## benchmarks (figures go to bench/out and BENCHMARKS.md); not part of `test`
	@bash bench/run_all.sh

bento: setup ## build the Bento: the retentio wheel into dist/, then bentoml build (bentofile.yaml)
	@rm -rf dist && $(BIN)/python -m pip wheel --no-deps -q -w dist .
	@$(BIN)/bentoml build

serve: setup ## serve the champions on PORT (default 3000)
	@$(BIN)/retentio serve --port $(PORT)

ui: setup ## open the MLflow UI on the embedded store (http://127.0.0.1:5000)
	@$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000

clean: ## remove generated data, stores, caches (keeps .venv)
	@rm -rf artifacts data mlruns bench/out .pytest_cache .ruff_cache .hypothesis .typecheck \
		.mypy_cache
	@find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

.PHONY: help setup run test test-fast lint imports typecheck check format bench bento serve ui clean
