"""Load the base model (GGUF file or Hugging Face folder) in float32 on CPU and merge the LoRA adapters into it.

Merging (rather than keeping LoRA branches) makes every forward pass the plain model's, so the adapters cost
nothing per token; adapters are merged in input order, which the deployment fixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from cloister.errors import JobInvalid

from .config import ServeConfig


@dataclass(frozen=True)
class Loaded:
    """The model ready to serve: its id on ``/v1/models``, context length and end-of-sequence token ids."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str
    context: int
    eos_ids: frozenset[int]

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)


def _base(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if path.is_file() and path.suffix == ".gguf":
        folder, extra = path.parent, {"gguf_file": path.name}
    elif path.is_dir() and (path / "config.json").is_file():
        folder, extra = path, {}
    else:
        raise JobInvalid(
            f"the model input {path.name} is neither a .gguf file nor a Hugging Face folder with config.json"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra)
    except (OSError, ValueError, KeyError) as exc:
        raise JobInvalid(f"cannot load the model {path.name}: {exc}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise JobInvalid(f"the model {path.name} has no chat template; the engine serves chat models only")
    return model, tokenizer


def _merge(model: PreTrainedModel, adapter: Path) -> PreTrainedModel:
    try:
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise JobInvalid(f"cannot apply the adapter {adapter.name} to this model: {exc}") from None
    if not isinstance(merged, PreTrainedModel):
        raise JobInvalid(f"merging the adapter {adapter.name} did not give a plain model back")
    return merged


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(item for item in value if isinstance(item, int))
    if not ids:
        raise JobInvalid("the model names no end-of-sequence token; the engine could not tell when an answer ends")
    return frozenset(ids)


def load(config: ServeConfig) -> Loaded:
    model, tokenizer = _base(config.model)
    for adapter in config.adapters:
        model = _merge(model, adapter)
    model.train(False)
    native = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    context = min(filter(None, (native, config.max_context)), default=0)
    if context <= 0:
        raise JobInvalid("the model declares no context length; set the parameter 'max_context'")
    name = config.model.name.removesuffix(".gguf")
    return Loaded(model, tokenizer, name, context, _eos_ids(model, tokenizer))
