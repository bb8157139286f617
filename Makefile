# The two commands a new user needs: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test test-deps lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/hookline serve

# Debian's chromium (browser tests), PostgreSQL server (postgres tests), prometheus (promtool,
# for deploy/prometheus) and systemd (systemd-analyze, for deploy/systemd), installed with apt
# when missing (as root).
test-deps:
	@sh scripts/test-deps

# Two runs: every test but the serial ones two at a time (pytest-xdist; worksteal, because the
# default hands one worker all the long acceptance tests while the other finishes the short ones
# and idles), then the serial ones (the isolation checks, which measure rates and probe times)
# alone, so that no other test's load is scored against them.
test: $(STAMP) test-deps
	$(BIN)/pytest -q -m 'not bench and not serial' -n 2 --dist worksteal tests
	$(BIN)/pytest -q -m 'serial and not bench' tests

# The default benchmark scenario (max, SQLite); see docs/benchmarks.md for the others.
bench: $(STAMP)
	$(BIN)/hookline bench

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .hookline build *.egg-info src/*.egg-info
