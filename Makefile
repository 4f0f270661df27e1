# fx-jupyter: `make run` starts JupyterLab with fx and a local endpoint; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HEADLESS ?=
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k broker -x"`.
PYTEST_ARGS ?=
# Extra bench/compare.py arguments, e.g. `make bench BENCH_ARGS="--quick"` or `--only fx,dask`.
BENCH_ARGS ?=
# Debian packages the tests use (installed by `make system-deps` when missing).
SYSTEM_PACKAGES := chromium postgresql bubblewrap munge slurmctld slurmd slurm-client

.PHONY: help setup system-deps labextension run test bench clean

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed labextension  ## Create .venv, install fx-jupyter (editable) with its test extras, build the Lab panel.

labextension: $(VENV)/.installed  ## Build the JupyterLab panel into fx_jupyter/labextension/ and link it into .venv (no-op when unchanged).
	bash scripts/build-labextension.sh

system-deps:  ## Install the Debian packages the tests need (root; no-op when present).
	@bash scripts/system-deps.sh $(SYSTEM_PACKAGES)

run: setup  ## JupyterLab with the fx service, a local endpoint and the tutorial (HEADLESS=1: run the tutorial and print its outputs).
	$(PY) scripts/run.py $(if $(HEADLESS),--headless,)

test: setup system-deps  ## Set everything up and run the whole test suite.
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup  ## fx side by side with its peers (installed into .venv-bench on first use), then fx's own benchmarks.
	$(PY) bench/compare.py $(BENCH_ARGS)
	$(PY) bench/engines.py
	$(PY) bench/responsiveness.py
	$(PY) bench/cell_overhead.py
	$(PY) bench/large_payloads.py
	$(PY) bench/queued.py

clean:  ## Remove the virtualenv and build artifacts.
	rm -rf $(VENV) build dist *.egg-info labextension/node_modules labextension/lib labextension/tsconfig.tsbuildinfo fx_jupyter/labextension
