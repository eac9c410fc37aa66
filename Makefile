# sophia-tasks: two commands on a fresh machine — `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install services demo test test-unit test-integration up bench lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

services: install
	@$(BIN)/python -m sophia_tasks.stack

demo: install services
	$(BIN)/python -m sophia_tasks.demo

test: install services
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

test-integration: install services
	$(BIN)/python -m pytest -q tests/integration

up: install services
	@mkdir -p var/snowflake
	$(BIN)/honcho start

bench: install services
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var/*.log build *.egg-info
