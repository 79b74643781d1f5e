# Everything a fresh Debian 12 machine needs, run as root:
#   make demo   installs, starts the sandbox cluster and JupyterLab configured for it, prints the URL
#   make test   installs, starts the sandbox cluster, runs every test
#   make bench  runs the benchmarks against the sandbox
#   make pictures  retakes the README's pictures (docs/images) with the browser tests
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO_PORT ?= 8888
# jlpm (JupyterLab's yarn) and jupyter come from the project's environment.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
LABEXT_SOURCES := $(wildcard labextension/src/*.ts labextension/style/* labextension/schema/*.json) \
	labextension/package.json labextension/tsconfig.json

.PHONY: install venv labextension sandbox-install sandbox-up sandbox-down hub-up hub-down test \
	lint bench demo demo-stop clean pictures

venv: $(VENV)/.installed

# The editable install builds the JupyterLab extension (labextension/) with hatch-jupyter-builder
# and copies it into the environment; a link in place of the copy makes later rebuilds
# (`make labextension`) live.
LABEXT_INSTALLED := $(VENV)/share/jupyter/labextensions/jupyter-hpc-manager
$(VENV)/.installed: pyproject.toml labextension/package.json labextension/yarn.lock
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,dev,demo]'
	rm -rf $(LABEXT_INSTALLED)
	ln -s $(CURDIR)/jupyter_hpc_manager/labextension $(LABEXT_INSTALLED)
	touch $@

jupyter_hpc_manager/labextension/package.json: $(LABEXT_SOURCES) | venv
	cd labextension && jlpm install && jlpm build

labextension: venv jupyter_hpc_manager/labextension/package.json

sandbox-install:
	bash sandbox/install.sh

install: venv labextension sandbox-install

sandbox-up: install
	bash sandbox/up.sh

sandbox-down: hub-down
	bash sandbox/down.sh

# A real JupyterHub on http://127.0.0.1:8000/ in front of the sandbox (users alice and bob).
hub-up: sandbox-up
	bash sandbox/hub-up.sh

hub-down:
	bash sandbox/hub-down.sh

lint: venv labextension
	$(VENV)/bin/ruff check jupyter_hpc_manager tests bench
	$(VENV)/bin/mypy
	cd labextension && jlpm lint

# Browser tests drive Playwright's sync API: their own pytest runs, away from asyncio test loops.
# tests/hub go through the sandbox's JupyterHub (alice and bob, Chromium).
test: hub-up lint
	cd labextension && jlpm test
	$(VENV)/bin/pytest tests --ignore=tests/browser --ignore=tests/hub --durations=15
	$(VENV)/bin/pytest tests/browser --durations=5
	$(VENV)/bin/pytest tests/hub --durations=5

# The README's pictures of the sidebar, the login dialog and VS Code, taken from the sandbox by
# the accessibility test (HPC_PICTURES: where they go, cropped to what they show).
pictures: sandbox-up
	HPC_PICTURES=docs/images $(VENV)/bin/pytest tests/browser/test_a11y.py -k axe

bench: hub-up
	$(PY) bench/status.py
	$(PY) bench/proxy.py
	$(PY) bench/wan.py
	$(PY) bench/kernel.py
	$(PY) bench/hub.py

demo: sandbox-up
	bash sandbox/demo.sh $(DEMO_PORT)

demo-stop:
	-bash sandbox/demo.sh --stop

clean: sandbox-down
	rm -rf $(VENV) .sandbox labextension/node_modules labextension/lib jupyter_hpc_manager/labextension
