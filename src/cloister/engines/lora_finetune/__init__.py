"""The built-in LoRA fine-tuning engine bundle; its code is the ``lora_engine`` package next to ``engine.toml``."""
