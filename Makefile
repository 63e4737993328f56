# The study's commands. `make book` and `make test` work on a fresh machine: both set up
# .venv first when needed. See README.md and book/rerun.md.
SHELL := /bin/bash
.DEFAULT_GOAL := book

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

# PRESET: smoke, lab, cpu or gpu. NB: some notebooks only. FORCE=1: execute even the notebooks
# whose executed copy is current (the runner's execution cache; see book/rerun.md).
PRESET ?= cpu
NB ?=
FORCE ?=
RUN_ARGS := --preset $(PRESET) $(if $(strip $(NB)),--nb $(NB)) \
            $(if $(filter 1 yes true,$(FORCE)),--force)
PUBLISH := _build/publish
# Debian's TeX for `make pdf`, installed by it on demand (as root), never by `make setup`.
TEX_PACKAGES := texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended \
                texlive-xetex latexmk fonts-freefont-otf

.PHONY: setup run book publish pdf tex test lint bench clean gpu-check

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

# The site ready to deploy (GitHub Pages: .github/workflows/book.yml runs this target): the
# HTML book copied to $(PUBLISH), with a .nojekyll (so that _static/ and _images/ are served),
# refused if a page links to an absolute path or a local file.
publish: book
	rm -rf $(PUBLISH)
	cp -a _build/html $(PUBLISH)
	touch $(PUBLISH)/.nojekyll
	@if grep -rlE --include='*.html' '(href|src)="(/|file:)' $(PUBLISH); then \
	  echo "publish: the pages above link to absolute paths" >&2; exit 1; fi
	@echo "publish: $(CURDIR)/$(PUBLISH) (open index.html, or deploy the folder as it is)"

# The whole book as one PDF through LaTeX (xelatex), in its own build folder so that the HTML
# build stays incremental: _build/book.pdf.
pdf: run tex
	$(VENV)/bin/jupyter-book build . --builder pdflatex --path-output _build/pdf
	cp _build/pdf/_build/latex/book.pdf _build/book.pdf
	@echo "pdf: $(CURDIR)/_build/book.pdf"

tex:
	@if command -v dpkg >/dev/null; then \
	  dpkg -s $(TEX_PACKAGES) >/dev/null 2>&1 && exit 0; \
	  [ "$$(id -u)" = 0 ] || { echo "make pdf needs: apt-get install $(TEX_PACKAGES)" >&2; exit 1; }; \
	  echo "pdf: installing $(TEX_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends $(TEX_PACKAGES) \
	  || { apt-get update -q && apt-get install -y -q --no-install-recommends $(TEX_PACKAGES); }; \
	else command -v xelatex >/dev/null && command -v latexmk >/dev/null \
	  || { echo "make pdf needs TeX Live's xelatex and latexmk" >&2; exit 1; }; fi

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
