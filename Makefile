# The README's commands. Each target sets up .venv itself, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck pytest browser screenshot bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes (the stamp name carries its checksum).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m launcher

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy app settings

pytest: $(STAMP)
	$(BIN)/python -m pytest

# Debian's Chromium, for the dashboard's browser test. Where it cannot be installed the
# test skips itself and says why; it is never passed silently.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
		echo "make: Chromium could not be installed; the dashboard browser test will be skipped"

# Regenerates docs/dashboard.png, the README's screenshot, from the real page.
screenshot: $(STAMP) browser
	$(BIN)/python scripts/dashboard_screenshot.py

test: lint typecheck browser pytest

# The full benchmark (about 8 minutes on 2 cores): installs nginx from Debian when it
# can, and rewrites BENCHMARKS.md and docs/benchmarks.png.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# A small run (under a minute) that checks the harness; tests/benchmarks runs it too.
bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick --output /tmp/BENCHMARKS-quick.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
