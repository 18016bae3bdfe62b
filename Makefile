# lmforge: `make run` on a fresh machine creates the environment and runs the whole pipeline;
# `make test` runs the tests. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
# Two stamps: `make run` installs the pipeline's dependencies (pyproject's `dependencies`) and
# nothing else; `make test` (and lint) adds the dev extra on top: pytest, the linters, Playwright,
# moto, copier, the hf/sweep/scale extras. Either works first on a fresh clone.
STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
export PATH := $(abspath $(BIN)):$(PATH)

.DEFAULT_GOAL := help

# The lock pins every package (torch==2.13.0, CPU) for the one Python it was resolved for
# (pyproject's requires-python): installs are deterministic.
define pip_install
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(LOCK) -e "$(1)"
endef

$(STAMP): pyproject.toml $(LOCK)
	$(call pip_install,.)
	@touch $(STAMP)

$(DEV_STAMP): pyproject.toml $(LOCK)
	$(call pip_install,.[dev])
	@touch $(DEV_STAMP) $(STAMP)

.PHONY: help install install-dev run test test-all lint docs params deps mlflow-ui bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with what the pipeline needs (pinned by requirements.lock)

install-dev: $(DEV_STAMP) ## install plus the dev extra: tests, linters, hf/sweep/scale/template extras

run: $(STAMP) ## run the whole pipeline (collect -> evaluate) on the built-in corpus
	LMFORGE_PIPELINE_ID=$${LMFORGE_PIPELINE_ID:-$$(date +%Y%m%d-%H%M%S)} dvc repro

MARKERS ?= not slow
test: $(DEV_STAMP) ## run the test suite (slow tests excluded; MARKERS="..." to choose)
	$(BIN)/python -m pytest -m "$(MARKERS)" $(PYTEST_ARGS)

test-all: $(DEV_STAMP) ## run every test, the slow ones included
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP) ## ruff, mypy and the import contracts (lint-imports), configured in pyproject.toml
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

docs: $(DEV_STAMP) ## build the documentation site into site/, offline; any warning fails (mkdocs.yml)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

params: $(STAMP) ## rewrite params.yaml from conf/ (after editing conf/)
	$(BIN)/python -m lmforge.params

deps: $(STAMP) ## rewrite dvc.yaml's code deps from what each stage imports (after moving imports)
	$(BIN)/python tools/dvc_deps.py --write

mlflow-ui: $(STAMP) ## open the MLflow UI on the project's store at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --host 127.0.0.1 --port 5000

bench: $(STAMP) ## benchmarks against peers measured in the same run (docs/benchmarks.md)
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[bench]"
	$(BIN)/python bench/pretrain_throughput.py
	$(BIN)/python bench/generate_throughput.py
	$(BIN)/python bench/data_path.py
	$(BIN)/python bench/startup.py

clean: ## remove pipeline outputs (keeps .venv, mlflow.db and the DVC cache)
	rm -rf data/raw data/prepared data/tokenizer data/shards models metrics plots reports outputs multirun site
