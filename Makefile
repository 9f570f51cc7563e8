# secateurs: `make demo` and `make test` do all set-up by themselves (venv, pinned CPU torch, data).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
# Stable CPU timings (ENVIRONMENT.md): glibc reads these at process start.
export MALLOC_MMAP_THRESHOLD_ := 1000000000
export MALLOC_TRIM_THRESHOLD_ := 1000000000
JOBS ?= 2

.PHONY: setup data test test-fast lint typecheck demo bench-smoke report clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PIP) install -q -c constraints.txt --no-deps timm torchvision pyhessian
	$(PIP) install -q -c constraints.txt huggingface_hub
	touch $@

setup: $(BIN)/.installed data

data:
	@scripts/ensure-data.sh

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python scripts/check_architecture.py

typecheck: $(BIN)/.installed
	$(BIN)/mypy src benchmarks scripts

test: setup
	@scripts/ensure-chromium.sh
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python scripts/check_architecture.py
	$(BIN)/mypy src benchmarks scripts
	$(BIN)/pytest -q -n $(JOBS) --dist loadfile

test-fast: setup
	$(BIN)/pytest -q -n $(JOBS) -m "not slow"

demo: setup
	$(BIN)/secateurs bench suites/demo.yaml --out runs/demo

bench-smoke: setup
	$(BIN)/secateurs bench suites/smoke.yaml --out runs/smoke

# README plots: docs/img/NAME-PLOT.png (committed) and runs/reports/NAME/report.html from results/*.jsonl.
report: $(BIN)/.installed
	$(BIN)/python scripts/report_images.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
