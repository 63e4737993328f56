# The study's commands. `make book` and `make test` work on a fresh machine: both set up
# .venv first when needed. See README.md and book/rerun.md.
SHELL := /bin/bash
.DEFAULT_GOAL := book

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

PRESET ?= cpu
NB ?=
RUN_ARGS := --preset $(PRESET) $(if $(strip $(NB)),--nb $(NB))

.PHONY: setup run book test lint bench clean gpu-check

setup: $(STAMP)

# Torch first, pinned (a local wheel here, PyPI elsewhere), then the package and its extras.
# The python3 kernel spec is written into the venv so papermill starts .venv/bin/python.
# Chromium (optional) lets the tests check that the book's math is typeset.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e ".[book,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (growcore)"
	@if command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q chromium >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
	  || echo "chromium not installed: the typeset-math check will be skipped"; \
	fi
	touch $@

run: setup
	$(PY) -m growcore.runner $(RUN_ARGS)

book: run
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "book: $(CURDIR)/_build/html/index.html"

lint: setup
	$(VENV)/bin/ruff check growcore tests $(wildcard bench)

test: lint
	$(PY) -m pytest -x -q

bench: setup
	@set -e; for script in $(wildcard bench/*.py); do echo "== $$script"; $(PY) $$script; done

# Every chapter's GPU code path for a few steps, throughput, growth cost, peak memory and the
# streaming loader, in under 5 minutes on one GPU (tiny sizes without one). ARGS: e.g. --json F.
gpu-check: setup
	$(PY) -m growcore.gpucheck $(ARGS)

# Build outputs only: results/ (experiment records) and data/ are kept.
clean:
	rm -rf _build book/chapters .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
