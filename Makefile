# `make demo` runs the end-to-end demo; `make test` runs the whole test suite.
# Both create the virtualenv (.venv) themselves on a fresh machine. `make bench` runs the benchmarks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint check bench benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.core: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $@ $(VENV)/.core

# The demo runs through the CLI, which needs the `cli` extra (click, rich).
$(VENV)/.cli: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[cli]"
	touch $@ $(VENV)/.core

demo: $(VENV)/.cli
	$(BIN)/dotmac-events demo

test: $(VENV)/.dev
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check dotmac tests benchmarks examples
	$(BIN)/ruff format --check dotmac tests benchmarks examples
	$(BIN)/mypy --strict dotmac

check: test lint

$(VENV)/.bench: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[all,dev,bench]"
	touch $@ $(VENV)/.dev $(VENV)/.core

# Every benchmark, ours against the raw clients, interleaved; see benchmarks/README.md.
bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks

benchmarks: bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
