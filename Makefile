# One target per job. `make run` and `make test` are the whole quick start.
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
PYTHON  ?= python3

.PHONY: install run test lint bench bench-check browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## virtual environment at .venv (idempotent)

run: install  ## migrate, then web service + mail sink on 127.0.0.1 (SQLite, dev secrets)
	GATEKEEPER_ENV=dev $(BIN)/gatekeeper db upgrade
	GATEKEEPER_ENV=dev $(BIN)/gatekeeper apikey bootstrap
	GATEKEEPER_ENV=dev $(BIN)/gatekeeper run

browser:  ## Debian's Chromium for the page tests (installed once)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { echo "could not install chromium (need root or sudo)"; exit 1; }; }

test: install browser  ## every test, on SQLite and PostgreSQL
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gatekeeper webhooks
	$(BIN)/mypy

BENCH_ROWS ?= 1000000
BENCH_SECONDS ?= 10

bench: install  ## benchmarks at full size; each prints its figure, its baseline and the ratio
	$(BIN)/python bench/import.py --rows $(BENCH_ROWS)
	$(BIN)/python bench/filter.py --rows $(BENCH_ROWS)
	$(BIN)/python bench/retention.py --rows $(BENCH_ROWS)
	$(BIN)/python bench/tokens.py --rows 100000
	$(BIN)/python bench/links.py --seconds $(BENCH_SECONDS)
	$(BIN)/python bench/webhooks.py --seconds $(BENCH_SECONDS)

bench-check: install  ## every benchmark, each ratio compared with its target; exit 1 if one is missed
	$(BIN)/python bench/check.py --rows $(BENCH_ROWS) --seconds $(BENCH_SECONDS)

clean:
	rm -rf $(VENV) var build *.egg-info
