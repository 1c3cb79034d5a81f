# The README's commands. They share one virtual environment (.venv), created by the first
# one run; each installs into it what it needs, and a stamp file per extra skips the
# install when pyproject.toml and the constraints have not changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every install takes the versions the suite last passed with on this Python (pip's -c), so
# that a new release elsewhere cannot break the suite between two changes of ours; with no
# file for this Python, the newest releases. make constraints writes the file.
PRINT_VERSION := -c 'import sys; print("%d.%d" % sys.version_info[:2])'
PY_VERSION := $(shell $(firstword $(wildcard $(BIN)/python) $(PYTHON)) $(PRINT_VERSION))
CONSTRAINTS := constraints/python$(PY_VERSION).txt
PIN := $(if $(wildcard $(CONSTRAINTS)),-c $(CONSTRAINTS))
# The newest releases, in a separate environment: make test-latest.
LATEST ?= .venv-latest

.PHONY: demo test test-latest constraints lint docs clean

demo: $(VENV)/.installed
	$(BIN)/sk-multitask demo --out demo-output

# The suite on every core (pytest-xdist), each test file in one worker: its tests share their
# module's fixtures, ports and processes. make test TEST_WORKERS=0: in one process.
TEST_WORKERS ?= auto
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The suite against the newest releases of everything (the dev and docs extras included,
# for make constraints), whatever the constraints say.
test-latest: $(LATEST)/bin/python
	$(LATEST)/bin/python -m pip install --upgrade --upgrade-strategy eager -e ".[dev,docs]"
	$(LATEST)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Once the suite passes on them, the newest releases become the constraints of their Python.
constraints: test-latest
	mkdir -p constraints
	v=$$($(LATEST)/bin/python $(PRINT_VERSION)) && { \
	  echo "# The versions the test suite last passed with, on Python $$v: written by make"; \
	  echo "# constraints (make test-latest's environment), installed by the Makefile's pip -c."; \
	  $(LATEST)/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip=='; \
	} > constraints/python$$v.txt.tmp && mv constraints/python$$v.txt.tmp constraints/python$$v.txt

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

$(LATEST)/bin/python:
	$(PYTHON) -m venv $(LATEST)

$(VENV)/.installed: pyproject.toml $(wildcard $(CONSTRAINTS)) | $(BIN)/python
	$(BIN)/python -m pip install $(PIN) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(wildcard $(CONSTRAINTS)) | $(BIN)/python
	$(BIN)/python -m pip install $(PIN) -e ".[test]"
	touch $@

$(VENV)/.installed-docs: pyproject.toml $(wildcard $(CONSTRAINTS)) | $(BIN)/python
	$(BIN)/python -m pip install $(PIN) -e ".[docs]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(wildcard $(CONSTRAINTS)) | $(BIN)/python
	$(BIN)/python -m pip install $(PIN) -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) $(LATEST) demo-output .pytest_cache site build/docs
