# One entry point for people and CI. `make demo` and `make test` work on a fresh machine:
# each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-dev-$(HASH)
DEMO_STAMP := $(VENV)/.installed-demo-$(HASH)
BENCH_STAMP := $(VENV)/.installed-bench-$(HASH)
# The demo's PP-OCR models ship inside the rapidocr wheel; we use its model files only.
RAPIDOCR := rapidocr==3.10.0

.PHONY: demo quickstart test test-gpu check lint typecheck docs bench bench-full clean

# Editable installs put the checkout on sys.path with a .pth path entry (setuptools' compat mode)
# rather than an import hook, so that mypy and pyright, which cannot run import hooks, resolve
# aioflow's types in a user's script as Python does.
EDITABLE := --config-settings editable_mode=compat

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[cv,onnx]' $(EDITABLE)
	$(BIN)/python -m pip install -q --no-deps $(RAPIDOCR)
	touch $(DEMO_STAMP)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]' $(EDITABLE)
	$(BIN)/python -m pip install -q --no-deps $(RAPIDOCR)
	touch $(STAMP) $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python examples/gates/run.py

quickstart: $(DEMO_STAMP)
	$(BIN)/python examples/quickstart.py

# The suite's services (a throwaway redis-server on loopback) start and stop with it. The tests
# marked gpu are left out (pytest prints how many): `make test-gpu` runs them.
test: $(STAMP)
	scripts/with-services $(BIN)/python -m pytest -q -m "not gpu"

# The GPU tests, in an environment of their own with onnxruntime-gpu in place of onnxruntime
# (never both in one environment: they overwrite each other's files). Fails, never skips, where
# onnxruntime offers no CUDAExecutionProvider or a session does not run on it.
GPU_VENV := .venv-gpu
GPU_BIN := $(GPU_VENV)/bin
GPU_STAMP := $(GPU_VENV)/.installed-gpu-$(HASH)

$(GPU_BIN)/python:
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_BIN)/python -m pip install -q --upgrade pip

$(GPU_STAMP): $(GPU_BIN)/python pyproject.toml
	$(GPU_BIN)/python -m pip install -q -e '.[test-gpu]' $(EDITABLE)
	touch $(GPU_STAMP)

test-gpu: $(GPU_STAMP)
	$(GPU_BIN)/python scripts/check-cuda
	$(GPU_BIN)/python -m pytest -q -m gpu

lint: $(STAMP)
	$(BIN)/ruff check aioflow tests examples benchmarks
	$(BIN)/ruff format --check aioflow tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict --warn-unused-ignores tests/typing/check_types.py
	$(BIN)/pyright -p tests/typing/pyrightconfig.json

# The docs site (mkdocs-material; the API reference by mkdocstrings) into site/, warnings as errors.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# What CI runs (.ci/run also starts Redis on loopback first).
check: lint typecheck docs test

$(BENCH_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[bench]' $(EDITABLE)
	touch $(BENCH_STAMP)

# The benchmark suite against the peers (installed into the venv by the [bench] extra).
# `bench`: the quick mode, under 3 minutes; `bench-full`: the full suite, then the docs page.
bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

bench-full: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) $(GPU_VENV) .pytest_cache .mypy_cache .ruff_cache site
