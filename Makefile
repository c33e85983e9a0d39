# One entry point for people and CI. `make demo` and `make test` work on a fresh machine:
# each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test check lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The demo's PP-OCR models ship inside the rapidocr wheel; we use its model files only.
	$(BIN)/python -m pip install -q --no-deps rapidocr==3.10.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check aioflow tests examples benchmarks
	$(BIN)/ruff format --check aioflow tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# What CI runs, and nothing else.
check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
