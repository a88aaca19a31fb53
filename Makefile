# zuul-status: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests use when they can be installed (as root).
TEST_DEBS := nginx chromium

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint format system-deps bench clean

help: ## Show this list of targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || $(MAKE) --no-print-directory python-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

.PHONY: python-venv
python-venv:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq python3-venv; \
	else echo "python3 lacks venv/ensurepip: install python3-venv" >&2; exit 1; fi

venv: $(STAMP) ## Create .venv with the project and its test tools

system-deps: ## Install nginx and Chromium from Debian's packages (when root)
	@missing=""; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "not root: tests needing$$missing will be skipped"; fi

demo: venv ## Run a fake Zuul, the recorder and the web UI on SQLite, and print the URL
	$(BIN)/zuul-status demo

lint: venv ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv ## Reformat the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: venv system-deps lint ## Install what the tests need and run the whole suite
	$(BIN)/pytest

bench: venv ## Run the benchmarks under bench/
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean: ## Remove the virtualenv, caches and local data
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis test-artifacts
