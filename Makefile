# sophia-tasks: two commands on a fresh machine — `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install promtool services demo test test-unit test-integration up bench soak lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[local,dev]"
	@touch $(STAMP)

# promtool checks the generated Prometheus rules in the unit tests (Debian package `prometheus`;
# about a minute to install, once).
promtool:
	@command -v promtool >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null || \
	  { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null; }; }
	@promtool --version | head -1

services: install
	@$(BIN)/python -m sophia_tasks.dev.stack

demo: install services
	$(BIN)/python -m sophia_tasks.dev.demo

# The suite runs the lint gate first, so a new import cycle or lint finding fails CI.
test: lint promtool services
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

test-unit: install promtool
	$(BIN)/python -m pytest -q tests/unit

test-integration: install services
	$(BIN)/python -m pytest -q tests/integration

# Development defaults so the whole Procfile starts; set your own in production.
up: install services
	@mkdir -p var/snowflake
	@export PATH="$(abspath $(BIN)):$$PATH"; \
	[ -n "$$SOPHIA_WEBHOOK_TOKENS_FILE" ] || export SOPHIA_WEBHOOK_TOKENS="$${SOPHIA_WEBHOOK_TOKENS:-dev-token}"; \
	[ -n "$$SOPHIA_READ_TOKENS_FILE" ] || export SOPHIA_READ_TOKENS="$${SOPHIA_READ_TOKENS:-dev-read-token}"; \
	[ -n "$$FLOWER_BASIC_AUTH_FILE" ] || export FLOWER_BASIC_AUTH="$${FLOWER_BASIC_AUTH:-admin:dev-password}"; \
	echo "webhook: http://127.0.0.1:$${PORT:-9009}/estuary/webhook (bearer token from SOPHIA_WEBHOOK_TOKENS, dev default dev-token)"; \
	echo "reads:   documents and /metrics with a bearer token from SOPHIA_READ_TOKENS (dev default dev-read-token)"; \
	echo "flower:  http://127.0.0.1:$${FLOWER_PORT:-5555} (FLOWER_BASIC_AUTH, dev default admin:dev-password)"; \
	exec $(BIN)/honcho start --port $${PORT:-9009}

# Issue #19's targets, PASS/FAIL per line (docs/benchmarks.md): ~15 min; `make bench BENCH_ARGS="--quick"` ~5 min.
bench: install services
	$(BIN)/python -m bench $(BENCH_ARGS)

# 10 minutes at 500 events/s with the worker SIGKILLed every minute (docs/benchmarks.md).
soak: install services
	$(BIN)/python -m bench --scenario soak --out bench/results/$$(date +%F)-soak.json

# ruff (pyproject.toml) and the import-linter contracts (.importlinter): layers, no cycles.
lint: install
	$(BIN)/ruff check --no-cache .
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) var/*.log build *.egg-info
