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

.PHONY: all setup run run-cluster test test-unit test-conformance vm-test bench clean distclean

all: test

setup:
	@scripts/setup

# Generate the demo configuration once (kept across runs so the disk image survives), then run
# the daemon in the foreground on 127.0.0.1:$(HOST_PORT). Ctrl-C stops it.
run: setup
	@if [[ ! -f "$(DEMO_CONFIG)" ]]; then \
		$(VENV)/bin/odxtarget demo-config --dir "$(RUN_DIR)" --port $(HOST_PORT); \
	fi
	@echo "administer it with: $(VENV)/bin/odxtargetcli ls (from $(CURDIR): it looks in ./run/)," \
		"or from anywhere: odxtargetcli --socket $(abspath $(RUN_DIR))/control.sock ls"
	exec $(PYTHON) -m odxtarget serve --config "$(DEMO_CONFIG)"

# A one-node Ceph cluster (userspace, objects in memory) and two gateways serving
# iqn.2026-11.org.odxtarget:cluster, LUNs 0 and 1 in 1 GiB RBD images, on 127.0.0.1:3260 and
# 127.0.0.1:3261; state under $(RUN_DIR)/cluster. Ctrl-C stops all of it (docs/rbd.md).
run-cluster: setup
	exec $(PYTHON) scripts/run_cluster.py --dir "$(RUN_DIR)/cluster"

# The whole suite: unit, property, integration and conformance tests; in CI (CI=true) or with
# VM=1 also the guest suite (vm-test), which takes several minutes and fails the build when
# the guest fails or runs no test. Developers' plain `make test` stays quick.
test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)
	@if [[ "$(CI)" == true || "$(VM)" == 1 ]]; then $(MAKE) --no-print-directory vm-test; fi

# The guest suite (tests/vm): Debian's kernel under QEMU with LIO, TCMU and open-iscsi, odxtarget
# in LIO mode and natively (docs/lio.md). VM_PYTEST_ARGS selects tests inside the guest.
vm-test: setup
	scripts/vm-test

test-unit: setup
	$(PYTHON) -m pytest tests/unit tests/property $(PYTEST_ARGS)

test-conformance: setup
	$(PYTHON) -m pytest -m conformance $(PYTEST_ARGS)

# odxtarget against tgtd, each workload on each target in turn: I/O workloads by the project's
# load generator (tools/loadgen, compiled into build/loadgen), a latency probe and the ODX
# section; prints tables, writes bench-results/bench-<time>.json, asserts nothing. Needs root.
# Subsets and options: BENCH_ARGS="--only randread4k,coldread --seconds 4" (docs/testing.md).
bench: setup
	$(PYTHON) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf "$(RUN_DIR)" bench-results build dist .pytest_cache .hypothesis *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf "$(VENV)"
