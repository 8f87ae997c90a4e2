# Setup and test on a fresh machine. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The CPU build of torch (a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine).
TORCH_SPEC ?= torch==2.13.0

export NEMO_GUARDRAILS_NO_USAGE_STATS = 1

.PHONY: setup test demo bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/.installed

test: setup
	$(BIN)/pytest -q

demo: setup
	$(BIN)/python examples/moderate.py

bench: setup
	$(BIN)/python bench/bench_cpu.py

clean:
	rm -rf $(VENV) build *.egg-info
