# Everything a fresh Debian 12 machine needs, run as root:
#   make demo   installs, starts the sandbox cluster and JupyterLab configured for it, prints the URL
#   make test   installs, starts the sandbox cluster, runs every test
#   make bench  runs the benchmarks against the sandbox
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SANDBOX := .sandbox
DEMO_PORT ?= 8888

.PHONY: install venv sandbox-install sandbox-up sandbox-down test test-unit lint bench demo demo-stop clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,dev,demo]'
	touch $@

sandbox-install:
	bash sandbox/install.sh

install: venv sandbox-install

sandbox-up: install
	bash sandbox/up.sh

sandbox-down:
	bash sandbox/down.sh

lint: venv
	$(VENV)/bin/ruff check jupyter_hpc_manager tests bench
	$(VENV)/bin/mypy

test-unit: venv
	$(VENV)/bin/pytest tests/unit

# Browser tests drive Playwright's sync API: their own pytest run, away from asyncio test loops.
test: sandbox-up lint
	$(VENV)/bin/pytest tests --ignore=tests/browser
	$(VENV)/bin/pytest tests/browser

bench: sandbox-up
	$(PY) bench/status.py
	$(PY) bench/proxy.py

demo: sandbox-up
	bash sandbox/demo.sh $(DEMO_PORT)

demo-stop:
	-bash sandbox/demo.sh --stop

clean: sandbox-down
	rm -rf $(VENV) $(SANDBOX)
