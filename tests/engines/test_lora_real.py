"""The LoRA engine on the real SmolLM2-135M-Instruct GGUF: the tuned model learns facts the base model lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloister.client.assets import demo_datasets, smollm2_path
from cloister.engines.bundle import builtin_engine
from cloister.engines.job import JobSpec
from cloister.engines.recipes import demo_finetune_params
from cloister.engines.runner import run_engine


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_tuned_model_answers_a_held_out_question_the_base_model_cannot(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir(mode=0o700)
    job = JobSpec(
        inputs={"model": (smollm2_path(),), "datasets": tuple(demo_datasets().values())},
        params=demo_finetune_params(),
        outputs_dir=workspace / "outputs",
        checkpoint_dir=workspace / "checkpoints",
        progress_file=workspace / "progress.jsonl",
    )
    result = run_engine(builtin_engine("lora_finetune"), job, workspace=workspace, timeout=1700, threads=2)

    metrics = json.loads((job.outputs_dir / "metrics.json").read_text())
    losses = [point["loss"] for point in metrics["loss_curve"]]
    assert len(losses) == metrics["steps"] == 18
    assert losses[-1] < losses[0] / 2
    base, tuned = metrics["evaluation"]["base"], metrics["evaluation"]["tuned"]
    assert tuned["contains"] > base["contains"], "the tuned model states at least one more fact outright"
    assert tuned["recall"] > base["recall"] + 0.3
    assert tuned["f1"] > base["f1"]
    assert (job.outputs_dir / "adapter" / "adapter_model.safetensors").stat().st_size > 1_000_000
    assert sorted(path.name for path in job.checkpoint_dir.iterdir()) == ["step-00000010", "step-00000018"]
    print(f"\nreal-model fine-tuning took {result.seconds:.0f} s; {result.log.read_text().strip().splitlines()[-1]}")
    for row in metrics["evaluation"]["questions"]:
        print(f"Q: {row['question']}\n  base:  {row['base']['answer']!r}\n  tuned: {row['tuned']['answer']!r}")
