# The README's commands. They share one virtual environment (.venv), created by the first
# one run; each installs into it what it needs, and a stamp file per extra skips the
# install when pyproject.toml has not changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint docs clean

demo: $(VENV)/.installed
	$(BIN)/sk-multitask demo --out demo-output

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# ruff, then the layers: import-linter's contracts in pyproject.toml (imports run one way,
# torch-free modules import no torch, no cycles).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check sk_multitask tests
	$(BIN)/lint-imports

# The figures and numbers of the pages come from a real run, written to build/docs (ignored
# by git: the checkout is left as it was), then the site, failing on any warning: a broken
# link, a missing page, a public name without its page, a docstring that does not render.
docs: $(VENV)/.installed-docs
	$(BIN)/python docs/make_figures.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[docs]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) demo-output .pytest_cache site build/docs
