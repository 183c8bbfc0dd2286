"""The training loop: AdamW on the LoRA weights, seeded batches, progress lines, periodic checkpoints, resume."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel

from cloister.engines.job import append_progress

from . import checkpoint
from .config import TrainConfig
from .data import Example, Schedule, collate


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up over ``warmup_steps``, then linear decay towards 0 at ``total``."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return config.learning_rate * warm * (1.0 - step / total)


@dataclass(frozen=True)
class Trained:
    losses: list[float]
    resumed_from: int


def train(
    model: PeftModel,
    examples: Sequence[Example],
    config: TrainConfig,
    *,
    total_steps: int,
    pad_id: int,
    checkpoint_dir: Path,
    progress_file: Path,
    fingerprint: str,
) -> Trained:
    """Run steps up to ``total_steps``, continuing from the newest checkpoint in ``checkpoint_dir`` if any."""
    params = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    resumed = checkpoint.restore(checkpoint_dir, model=model, optimizer=optimizer, fingerprint=fingerprint)
    start, losses = (resumed.step, resumed.losses) if resumed else (0, [])
    schedule = Schedule(examples=len(examples), batch_size=config.batch_size, seed=config.seed)
    model.train()
    for step in range(start, total_steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step, total_steps)
        batch = collate([examples[index] for index in schedule.batch(step)], pad_id)
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        done = step + 1
        append_progress(progress_file, {"step": done, "total": total_steps, "loss": round(losses[-1], 6)})
        if config.checkpoint_every and (done % config.checkpoint_every == 0 or done == total_steps):
            checkpoint.save(
                checkpoint_dir, step=done, model=model, optimizer=optimizer, losses=losses, fingerprint=fingerprint
            )
    return Trained(losses=losses, resumed_from=start)
