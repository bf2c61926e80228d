# The two commands a fresh machine needs: `make run` serves the demo, `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo run test lint typecheck unit test-tools bench clean

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

# The dashboard's browser tests drive Debian's Chromium (Playwright never downloads one here);
# the Redis tests start Debian's redis-server on ports of their own (never 6379).
CHROMIUM ?= /usr/bin/chromium
test-tools:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@command -v redis-server >/dev/null || { echo "installing Debian's redis-server for the store tests"; \
		apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

unit: install test-tools
	$(BIN)/pytest

test: lint typecheck unit

bench: demo
	$(BIN)/python bench/serve_bench.py

clean:
	rm -rf $(VENV) models/digits/*/ .mypy_cache .ruff_cache .pytest_cache
