# Northwind Goods assistant: `make run` starts everything, `make test` passes the tests.
# Both create what is missing first (virtual environments, shop database, trained model).

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Rasa 3.6 needs Python 3.10; the gateway and the tests run on Python 3.11 (docs/architecture.md).
find_python = $(shell for p in python$(1) $$(pyenv root 2>/dev/null)/versions/$(1)*/bin/python$(1) \
	$$HOME/.pyenv/versions/$(1)*/bin/python$(1) /usr/bin/python$(1) /usr/local/bin/python$(1); do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == tuple(map(int, "$(1)".split(".")))' \
	>/dev/null 2>&1 && { echo "$$p"; break; }; done)
PYTHON310 ?= $(call find_python,3.10)
PYTHON311 ?= $(call find_python,3.11)

RASA_VENV := .venv/rasa
GW_VENV := .venv/gateway
RASA := $(RASA_VENV)/bin/rasa
RASA_PY := $(RASA_VENV)/bin/python
GW_PY := $(GW_VENV)/bin/python
SHOP_DB ?= var/shop.db

# Rasa's training cache outlives a fresh clone, so an unchanged pipeline is not retrained.
export RASA_CACHE_DIRECTORY ?= $(HOME)/.cache/northwind-assistant/rasa
export SQLALCHEMY_SILENCE_UBER_WARNING := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: help setup chromium run test train validate db bench retrain clean mypy-cache

help:
	@echo "make run       set up, train if the data changed, start the assistant (Ctrl-C stops)"
	@echo "make test      set up, train if the data changed, run the whole test suite"
	@echo "make train     train a model if the data or config changed (Rasa decides)"
	@echo "make validate  rasa data validate"
	@echo "make db        create and seed the demo shop database ($(SHOP_DB)) if missing"
	@echo "make bench     the benchmarks in bench/ (docs/performance.md)"
	@echo "make retrain   accepted corrections -> training data -> a new model, proven (docs/corrections.md)"

$(RASA_VENV)/.installed: requirements/rasa.lock.txt requirements/rasa.nodeps.txt
	@test -n "$(PYTHON310)" || { echo "Python 3.10 is needed for Rasa 3.6 (set PYTHON310=...)"; exit 1; }
	test -x $(RASA_PY) || $(PYTHON310) -m venv $(RASA_VENV)
	$(RASA_PY) -m pip install --quiet --disable-pip-version-check 'pip==26.3' 'setuptools==70.3.0' 'wheel==0.45.1'
	$(RASA_PY) -m pip install --quiet --disable-pip-version-check -r requirements/rasa.lock.txt
	$(RASA_PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/rasa.nodeps.txt
	touch $@

$(GW_VENV)/.installed: requirements/gateway.lock.txt
	@test -n "$(PYTHON311)" || { echo "Python 3.11 is needed for the gateway (set PYTHON311=...)"; exit 1; }
	test -x $(GW_PY) || $(PYTHON311) -m venv $(GW_VENV)
	$(GW_PY) -m pip install --quiet --disable-pip-version-check -r requirements/gateway.lock.txt
	touch $@

node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

db: $(RASA_VENV)/.installed
	$(RASA_PY) -m actions.shop_db seed --if-missing --path $(SHOP_DB)

setup: $(RASA_VENV)/.installed $(GW_VENV)/.installed node_modules/.installed db

# The browser tests drive Debian's Chromium through Playwright, which never downloads a browser
# of its own; install it when it is missing (as root, or with sudo).
chromium:
	@test -x /usr/bin/chromium || { \
	  s=""; [ "$$(id -u)" = 0 ] || s="sudo"; \
	  $$s apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$s apt-get install -y -qq chromium; }

train: $(RASA_VENV)/.installed
	$(RASA) train --out models

validate: $(RASA_VENV)/.installed
	$(RASA) data validate

run: setup train
	SHOP_DB_PATH=$(abspath $(SHOP_DB)) $(RASA_PY) -m bot.serve

# The suite in two halves side by side: the gateway's tests (tests/gateway, about two thirds
# of the time, mostly waiting on real servers) and the rest (the Rasa side's subprocess tests,
# triage). Each half is its own pytest session; the gateway half's report follows the other's,
# and the target fails if either fails. `$(GW_PY) -m pytest` alone still runs everything.
test: setup chromium train mypy-cache
	mkdir -p var
	$(GW_PY) -m pytest tests/gateway > var/test-gateway.log 2>&1 & gateway=$$!; \
	$(GW_PY) -m pytest --ignore=tests/gateway -p no:cacheprovider; rest=$$?; \
	wait $$gateway; gateway_status=$$?; \
	echo; echo "--- tests/gateway (run beside the above) ---"; cat var/test-gateway.log; \
	test $$rest -eq 0 && test $$gateway_status -eq 0

# mypy's cache (.mypy_cache/), built beside the training under `make -j` (.ci/run), so that the
# typing test (tests/test_typing.py) checks incrementally; its errors are the test's to report.
mypy-cache: $(GW_VENV)/.installed
	-$(GW_PY) -m mypy handoff >/dev/null 2>&1

# Accepted corrections from the gateway's store become training data and a new model in models/,
# compared with the model in service; they are marked exported only when that succeeded.
retrain: setup train
	mkdir -p var
	$(GW_PY) -m handoff.learning.corrections export --out var/corrections.json
	set -o pipefail; $(RASA_PY) -m bot.retrain --corrections var/corrections.json | tee var/retrain-report.json
	$(GW_PY) -m handoff.learning.corrections mark --input var/corrections.json \
	  --export-id retrain-$$(date -u +%Y%m%dT%H%M%SZ)

bench: setup train
	$(GW_PY) bench/rasa_turn.py

clean:
	rm -rf models results var .pytest_cache
