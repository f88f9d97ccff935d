# `make train` and `make test` set up .venv on first use (pip, from pyproject.toml), then run.
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: setup train test

$(VENV)/installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/installed

train: setup
	$(PYTHON) src/train.py $(ARGS)

test: setup
	$(PYTHON) -m pytest $(ARGS)
