# Two commands set up a fresh machine: `make repro` (pipeline) and `make test` (tests).
# Both create .venv on first use and reuse it afterwards (reinstalling only when the
# pins change), so they are safe to run again.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# dvc.yaml's commands call `python`: make it the environment's.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv repro test test-fast lint format

venv: $(INSTALLED)

# requirements.lock pins every transitive dependency; pyproject.toml pins the direct ones.
$(INSTALLED): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

# Offline: `make repro ARCHIVE=path [ARCHIVE_MD5=md5]` verifies and uses a local archive.
repro: venv
ifdef ARCHIVE
	$(BIN)/dvc exp run -S 'data.archive=$(abspath $(ARCHIVE))' -S 'data.md5=$(or $(ARCHIVE_MD5),null)'
else
	$(BIN)/dvc repro
endif

# Every test, the slow end-to-end ones included (plain `pytest` runs only the fast ones).
test: venv
	$(BIN)/python -m pytest -m "slow or not slow"

test-fast: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
