# The README's commands. Each target sets up .venv itself, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Each stamp's name carries pyproject.toml's checksum, so an edit there re-installs.
SUM := $(shell cksum < pyproject.toml | cut -d' ' -f1)
RUNTIME := $(VENV)/.runtime-$(SUM)
DEV := $(VENV)/.dev-$(SUM)

.PHONY: run install test lint typecheck pytest browser promtool discovery-servers redis valgrind screenshot bench bench-quick bench-ir clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# What running needs, and nothing else: no test, lint or bench tools.
$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	rm -f $(VENV)/.runtime-*
	touch $@

# Everything else the targets use: the runtime plus the dev and bench extras (which
# include the runtime, so this stamp stands for both).
$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	rm -f $(VENV)/.runtime-* $(VENV)/.dev-* $(VENV)/.installed-*
	touch $(RUNTIME) $@

install: $(DEV)

# `make run REPLICAS=2` (or more) runs that many gateway replicas sharing state through a
# Redis the launcher starts: then Debian's redis-server is installed first, like Chromium.
run: $(RUNTIME) $(if $(filter-out 1,$(strip $(REPLICAS))),redis)
	$(BIN)/python -m launcher

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV)
	$(BIN)/mypy app settings

pytest: $(DEV)
	$(BIN)/python -m pytest

# Debian's Chromium, for the dashboard's browser test. Where it cannot be installed the
# test skips itself and says why; it is never passed silently.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
		echo "make: Chromium could not be installed; the dashboard browser test will be skipped"

# Debian's prometheus package, for promtool: the tests check ops/'s alert rules with it.
# Where it cannot be installed those tests skip themselves and say why.
promtool:
	@command -v promtool >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null 2>&1; } || \
		echo "make: promtool could not be installed; the alert-rule tests will be skipped"

# Debian's dnsmasq-base (the binary only, no system daemon) and etcd-server, for the DNS
# and etcd discovery tests. Where they cannot be installed those tests skip themselves
# and say why.
discovery-servers:
	@{ { command -v dnsmasq || [ -x /usr/sbin/dnsmasq ]; } && command -v etcd; } >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dnsmasq-base etcd-server) >/dev/null 2>&1; } || \
		echo "make: dnsmasq or etcd could not be installed; the DNS and etcd discovery tests will be skipped"

# Debian's redis-server, for the shared-state tests (they start their own on free ports).
# Where it cannot be installed those tests skip themselves and say why.
redis:
	@command -v redis-server >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server) >/dev/null 2>&1; } || \
		echo "make: redis-server could not be installed; the shared-state tests will be skipped, and make run REPLICAS=2 cannot start"

# Debian's valgrind, for the bench's instruction counts (callgrind). Where it cannot be
# installed that section skips itself and says why.
valgrind:
	@command -v valgrind >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind) >/dev/null 2>&1; } || \
		echo "make: valgrind could not be installed; the bench's instructions-per-request section will be skipped"

# Regenerates docs/dashboard.png, the README's screenshot, from the real page.
screenshot: $(DEV) browser
	$(BIN)/python scripts/dashboard_screenshot.py

test: lint typecheck browser promtool discovery-servers redis valgrind pytest

# The full benchmark (about 13 minutes on 2 cores): installs nginx and valgrind from Debian
# when it can, and rewrites BENCHMARKS.md and docs/benchmarks.png.
bench: $(DEV) valgrind
	$(BIN)/python -m benchmarks.run

# Instructions per request alone (valgrind's callgrind, a few minutes): /tmp/BENCHMARKS-instructions.md.
bench-ir: $(DEV) valgrind
	$(BIN)/python -m benchmarks.run --only instructions

# A small run (under a minute) that checks the harness; tests/benchmarks runs it too.
bench-quick: $(DEV)
	$(BIN)/python -m benchmarks.run --quick --output /tmp/BENCHMARKS-quick.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
