# `make train` and `make test` set up .venv on first use (pip, from pyproject.toml), then run.
# `make test` lints first (ruff, import layers), as CI does.
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: setup train lint test

$(VENV)/installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/installed

train: setup
	$(PYTHON) src/train.py $(ARGS)

# Lint, format and the import layers (pyproject.toml's [tool.importlinter]) before the tests.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=src $(VENV)/bin/lint-imports

test: lint
	$(PYTHON) -m pytest $(ARGS)
