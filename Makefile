# odxtarget developer entry points. Every target that needs Python first runs scripts/setup,
# which is quick when the machine is already prepared.

SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
RUN_DIR ?= run
HOST_PORT ?= 3260
DEMO_CONFIG := $(RUN_DIR)/odxtarget.json
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: all setup run test test-unit test-conformance bench clean distclean

all: test

setup:
	@scripts/setup

# Generate the demo configuration once (kept across runs so the disk image survives), then run
# the daemon in the foreground on 127.0.0.1:$(HOST_PORT). Ctrl-C stops it.
run: setup
	@if [[ ! -f "$(DEMO_CONFIG)" ]]; then \
		$(VENV)/bin/odxtarget demo-config --dir "$(RUN_DIR)" --port $(HOST_PORT); \
	fi
	exec $(PYTHON) -m odxtarget serve --config "$(DEMO_CONFIG)"

# The whole suite: unit, property, integration and conformance tests.
test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PYTHON) -m pytest tests/unit tests/property $(PYTEST_ARGS)

test-conformance: setup
	$(PYTHON) -m pytest -m conformance $(PYTEST_ARGS)

# odxtarget against tgtd with iscsi-perf; prints a table, asserts nothing.
bench: setup
	$(PYTHON) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf "$(RUN_DIR)" bench-results build dist .pytest_cache .hypothesis *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf "$(VENV)"
