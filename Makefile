# The two commands a fresh machine needs: `make run` serves the demo, `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo run test lint typecheck unit browser bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/gateway models build-demo

run: demo
	$(BIN)/gateway serve $(ARGS)

lint: install
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench

typecheck: install
	$(BIN)/mypy

# The dashboard's browser tests drive Debian's Chromium (Playwright never downloads one here).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

unit: install browser
	$(BIN)/pytest

test: lint typecheck unit

bench: demo
	$(BIN)/python bench/serve_bench.py

clean:
	rm -rf $(VENV) models/digits/*/ .mypy_cache .ruff_cache .pytest_cache
