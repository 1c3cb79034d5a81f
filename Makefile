# The README's commands. Each creates the virtual environment it needs (.venv) and
# installs the package into it; a stamp file skips the install when nothing changed.
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

# The gallery's figures come from a real run (about a minute), then the site, failing on
# any warning: a broken link, a missing page, a docstring that does not render.
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
	rm -rf $(VENV) demo-output .pytest_cache site
