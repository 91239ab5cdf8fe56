# Two commands set up a fresh machine: `make repro` (pipeline) and `make test` (tests).
# Both create .venv on first use and reuse it afterwards (reinstalling only when the
# pins change), so they are safe to run again.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# DVC's plots page with vega inlined, set in .dvc/config.local: `dvc plots show` offline.
PLOTS_TEMPLATE := $(VENV)/share/dvc-plots-offline.html
# dvc.yaml's commands call `python`: make it the environment's.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv repro test lint format

venv: $(INSTALLED)

# requirements.lock pins every transitive dependency; pyproject.toml pins the direct ones.
$(INSTALLED): pyproject.toml requirements.lock tools/offline_plots.py
	@echo "Setting up $(VENV) from the pins (about two minutes the first time)..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install -c requirements.lock -e ".[dev]"
	$(BIN)/python -m tools.offline_plots --output $(PLOTS_TEMPLATE)
	$(BIN)/dvc config --local plots.html_template $(abspath $(PLOTS_TEMPLATE))
	touch $@

# Offline: `make repro ARCHIVE=path/to/cifar-10-python.tar.gz` uses a local copy of the
# archive params.yaml describes (checked against data.md5); params.yaml stays as it is.
repro: venv
ifdef ARCHIVE
	CIFAR10_ARCHIVE='$(abspath $(ARCHIVE))' $(BIN)/dvc repro
else
	$(BIN)/dvc repro
endif

# Every tier: unit, integration and end-to-end tests, on every core (plain `pytest` runs
# the unit tests alone).
test: venv
	$(BIN)/python -m pytest -m "" -n auto --dist worksteal

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
