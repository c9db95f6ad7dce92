# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
# Each target creates .venv and installs the project into it (editable, with the dev extras)
# the first time, and again only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

.DEFAULT_GOAL := help
.PHONY: help venv demo test dev lint

help:
	@echo "make demo   run the example etl workflow end to end (embedded Redis and PostgreSQL)"
	@echo "make test   run the test suite (starts its own servers when none are configured)"
	@echo "make dev    orchestrator dev: Redis, PostgreSQL, a worker, beat, Flower, the console (Ctrl-C"
	@echo "            stops; DEV_ARGS=--reload restarts the worker on code changes); in another shell,"
	@echo "            'source .orchestrator/env' puts the orchestrator command on PATH"
	@echo "make lint   ruff, mypy and the import layers"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import sys; sys.exit(sys.version_info < (3, 11))" || \
	  { echo "Python 3.11 or newer is needed; try: make $(MAKECMDGOALS) PYTHON=python3.12" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
	  { echo "could not create $(VENV) (on Debian/Ubuntu: apt install python3-venv)" >&2; exit 1; }
	@echo "installing the project and its dev tools into $(VENV)"
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[dev]"
	@touch $@

demo: $(STAMP)
	$(BIN)/python scripts/demo.py
	@echo "the CLI: $(BIN)/orchestrator --help (or source $(VENV)/bin/activate, then orchestrator --help)"

test: $(STAMP)
	BIN=$(BIN) bash scripts/test.sh $(PYTEST_ARGS)

dev: $(STAMP)
	$(BIN)/orchestrator dev $(DEV_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
