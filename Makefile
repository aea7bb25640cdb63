# Two commands for a fresh machine (see README.md):
#   make book   set everything up, run every chapter, build the site into _build/html
#   make test   set everything up, run all the tests (the book build and a browser among them)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Test processes (pytest-xdist), each taking whole test files: the book build runs beside the rest.
TEST_WORKERS ?= 2

# Chapters run with their working directory in book/, so a relative data folder is made absolute.
ifneq ($(VNCA_DATA_DIR),)
export VNCA_DATA_DIR := $(abspath $(VNCA_DATA_DIR))
endif

.PHONY: setup book test export clean

setup: $(VENV)/.installed node_modules/.installed
	@bash tools/install-chromium.sh

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

book: setup
	$(BIN)/jupyter-book build --warningiserror --keep-going .
	@echo "The site is at _build/html/index.html"

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

export: $(VENV)/.installed
	$(BIN)/python tools/format_chapters.py
	$(BIN)/python tools/export.py
	$(BIN)/python tools/citation.py
	$(BIN)/python tools/chapter_notebooks.py

clean:
	rm -rf _build
