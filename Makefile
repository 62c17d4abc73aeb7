# polytask developer entry points. `make demo` and `make test` work from a clean clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pinned torch first: a bare 'torch' would pull the CUDA build (several GB).
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/polytask compare

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/trainer_overhead.py
	$(BIN)/python benchmarks/balancing_cost.py 2>/dev/null
	$(BIN)/python benchmarks/engine_choice.py 2>/dev/null
	$(BIN)/python benchmarks/engine_heads.py 2>/dev/null

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache .ruff_cache
