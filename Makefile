# Two commands for a fresh machine (see README.md):
#   make book   set everything up, run every chapter, build the site into _build/html
#   make test   set everything up, run all the tests (the book build and a browser among them)
# and, to open the built site: make serve (its live demos fetch their models, which a page opened
# as a file:// cannot), then http://localhost:8000

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Test processes (pytest-xdist), each taking whole test files: the book build runs beside the rest.
TEST_WORKERS ?= 2

# Chapters run with their working directory in book/, so a relative data folder is made absolute.
ifneq ($(VNCA_DATA_DIR),)
export VNCA_DATA_DIR := $(abspath $(VNCA_DATA_DIR))
endif

# glibc's allocator asks for huge pages: XLA's CPU calls then spend far less time in page faults (the
# scaling-out chapter). The `vnca` command sets this for itself; the chapters' kernels get it here.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

# `make serve`: the built site over http on this machine only (SITE and PORT for another)
SITE ?= _build/html
PORT ?= 8000

.PHONY: setup book test export serve clean

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

# What the chapters' cached outputs depend on besides their own code: the package (weights included),
# the results it reads and the pinned versions. When their digest changes, or the live demo files that
# a chapter writes are missing, the cache goes (see _config.yml).
BOOK_INPUTS = find vnca results requirements.txt -type f -not -name '*.pyc' | LC_ALL=C sort

book: setup
	@digest="$$($(BOOK_INPUTS) | xargs sha256sum | sha256sum | cut -c1-64)"; \
	if [ "$$(cat _build/.book-inputs 2>/dev/null)" != "$$digest" ] || ! ls _static/live/*.vncaweb >/dev/null 2>&1; then \
		rm -rf _build/.jupyter_cache; mkdir -p _build; echo "$$digest" > _build/.book-inputs; fi
	$(BIN)/jupyter-book build --warningiserror --keep-going .
	@echo "The site is in _build/html: make serve, then open http://localhost:8000"

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

export: $(VENV)/.installed
	$(BIN)/python tools/format_chapters.py
	$(BIN)/python tools/export.py
	$(BIN)/python tools/citation.py
	$(BIN)/python tools/chapter_notebooks.py

serve:
	@test -f $(SITE)/index.html || { echo "no site in $(SITE): run make book first"; exit 2; }
	@echo "Serving $(SITE) at http://localhost:$(PORT) (Ctrl-C stops)"
	$(PYTHON) -m http.server --bind 127.0.0.1 --directory $(SITE) $(PORT)

clean:
	rm -rf _build
