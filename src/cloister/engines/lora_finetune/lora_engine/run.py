"""One fine-tuning job from inputs to outputs: read, load, train (resuming), evaluate, save adapter and metrics."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from cloister.engines.job import JobSpec

from .config import Prepared, manifest
from .data import Schedule, build_examples
from .evaluate import evaluate
from .model import attach_lora, load_base, save_adapter
from .train import train

ADAPTER_DIR = "adapter"
METRICS_FILE = "metrics.json"


@dataclass
class Outcome:
    """The metrics written to ``metrics.json`` and the wall time of each phase (kept out of the metrics, which
    depend only on the inputs)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started


def _threads() -> int:
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else len(os.sched_getaffinity(0))


def run(job: JobSpec, prepared: Prepared, *, threads: int | None = None) -> Outcome:
    """Do the job (checked by :func:`prepare`) and write ``adapter/`` and ``metrics.json`` to its outputs."""
    config, model_path, datasets = prepared.config, prepared.model, prepared.datasets
    torch.set_num_threads(threads or _threads())
    torch.use_deterministic_algorithms(True)
    outcome = Outcome()
    with outcome.phase("load"):
        base, tokenizer = load_base(model_path)
        examples, skipped = build_examples(tokenizer, prepared.conversations, config.max_length)
        model = attach_lora(base, config)
    total_steps = (
        config.steps or config.epochs * Schedule(len(examples), config.batch_size, config.seed).steps_per_epoch
    )
    with outcome.phase("train"):
        trained = train(
            model,
            examples,
            config,
            total_steps=total_steps,
            pad_id=int(tokenizer.pad_token_id),
            checkpoint_dir=job.checkpoint_dir,
            progress_file=job.progress_file,
            fingerprint=prepared.fingerprint,
        )
    with outcome.phase("evaluate"):
        evaluation = evaluate(model, tokenizer, config.eval_questions, config.max_new_tokens)
    with outcome.phase("save"):
        job.outputs_dir.mkdir(parents=True, exist_ok=True)
        save_adapter(model, config, job.outputs_dir / ADAPTER_DIR, model_path.name)
        outcome.metrics = {
            "engine": {"name": manifest().name, "version": manifest().version},
            "base_model": model_path.name,
            "datasets": [path.name for path in datasets],
            "examples": len(examples),
            "skipped_examples": skipped,
            "steps": total_steps,
            "resumed_from_step": trained.resumed_from,
            "loss_curve": [{"step": i + 1, "loss": round(loss, 6)} for i, loss in enumerate(trained.losses)],
            "evaluation": evaluation,
        }
        text = json.dumps(outcome.metrics, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        (job.outputs_dir / METRICS_FILE).write_text(text, encoding="utf-8")
    return outcome
