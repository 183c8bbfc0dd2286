"""Load the base model (GGUF file or Hugging Face folder) in float32 on CPU, attach LoRA, save the adapter."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from cloister.errors import JobInvalid

from .config import TrainConfig

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def load_base(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from ``path``; a GGUF file is de-quantized to float32 by transformers."""
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
        raise JobInvalid(f"the model {path.name} has no chat template; the engine trains chat models only")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def lora_config(config: TrainConfig) -> LoraConfig:
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_lora(model: PreTrainedModel, config: TrainConfig) -> PeftModel:
    """Wrap ``model`` with freshly initialised LoRA layers (their initialisation is seeded by ``config.seed``)."""
    torch.manual_seed(config.seed)
    try:
        peft_model = get_peft_model(model, lora_config(config))
    except ValueError as exc:
        raise JobInvalid(f"cannot attach LoRA to this model ({exc}); check 'target_modules'") from None
    if not isinstance(peft_model, PeftModel):
        raise JobInvalid("PEFT did not return a LoRA model for this base model")
    return peft_model


def save_adapter(model: PeftModel, config: TrainConfig, dest: Path, base_name: str) -> None:
    """``adapter_model.safetensors`` + ``adapter_config.json``, byte-identical for identical weights.

    The config names the base model by file name, not by the workspace path, which differs between runs.
    """
    dest.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model)
    tensors = {name: tensor.detach().contiguous() for name, tensor in state.items()}
    save_file(tensors, dest / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    saved = lora_config(config)
    saved.base_model_name_or_path = base_name
    saved.target_modules = sorted(config.target_modules)  # PEFT keeps a set, whose order changes per process
    saved.inference_mode = True
    saved.save_pretrained(str(dest))
