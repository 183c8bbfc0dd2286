"""The LoRA engine end to end as the loader runs it (separate process, job.json), on the tiny random model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from cloister.client.assets import demo_dataset_path
from cloister.engines.bundle import builtin_engine
from cloister.engines.job import JobSpec, read_progress
from cloister.engines.runner import EngineProcess, engine_env, run_engine, start_engine
from cloister.errors import EngineFailed

ENGINE = builtin_engine("lora_finetune")
STEPS = 40
PARAMS: dict[str, Any] = {
    "seed": 11,
    "steps": STEPS,
    "batch_size": 4,
    "learning_rate": 0.01,
    "max_length": 96,
    "lora_dropout": 0.1,  # dropout draws random numbers: resuming must restore the RNG too
    "checkpoint_every": 4,
    "eval_questions": [
        {"question": "How do I stop the devnet?", "expected": "cloister devnet down"},
        {"question": "What is a keeper?", "expected": "an agent that acts for a content owner"},
    ],
    "max_new_tokens": 8,
}


@dataclass(frozen=True)
class Run:
    workspace: Path
    job: JobSpec

    @property
    def adapter(self) -> Path:
        return self.job.outputs_dir / "adapter"

    def metrics(self) -> dict[str, Any]:
        return dict(json.loads((self.job.outputs_dir / "metrics.json").read_text()))


def _run(root: Path, model: Path, **overrides: Any) -> Run:
    workspace = root / "workspace"
    workspace.mkdir(parents=True, mode=0o700)
    job = JobSpec(
        inputs={"model": (model,), "datasets": (demo_dataset_path(),)},
        params={**PARAMS, **overrides},
        outputs_dir=workspace / "outputs",
        checkpoint_dir=root / "checkpoints",  # outside the workspace: the loader keeps checkpoints across runs
        progress_file=workspace / "progress.jsonl",
    )
    return Run(workspace, job)


def _start(run: Run) -> EngineProcess:
    return start_engine(ENGINE, run.job, workspace=run.workspace, threads=1)


@dataclass(frozen=True)
class Runs:
    first: Run
    second: Run
    killed: Run
    killed_at_step: int


@pytest.fixture(scope="module")
def runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The same job three times at once in separate processes and workspaces; the third is killed (SIGKILL) as
    soon as its first checkpoint exists."""
    first, second, killed = (_run(tmp_path_factory.mktemp(name), tiny_model) for name in ("first", "second", "kill"))
    with _start(first) as one, _start(second) as two, _start(killed) as three:
        deadline = time.monotonic() + 240
        while not (killed.job.checkpoint_dir / "step-00000004").exists():
            assert three.running() and time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.01)
        three.kill()
        one.wait(timeout=300)
        two.wait(timeout=300)
    return Runs(first, second, killed, len(read_progress(killed.job.progress_file)))


def test_trains_and_writes_adapter_metrics_progress_and_checkpoints(runs: Runs, tiny_model: Path) -> None:
    run = runs.first
    metrics = run.metrics()
    losses = [point["loss"] for point in metrics["loss_curve"]]
    assert [point["step"] for point in metrics["loss_curve"]] == list(range(1, STEPS + 1))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, "the loss must fall"
    assert (metrics["examples"], metrics["skipped_examples"], metrics["resumed_from_step"]) == (24, 0, 0)
    assert metrics["base_model"] == tiny_model.name
    evaluation = metrics["evaluation"]
    assert [row["question"] for row in evaluation["questions"]] == [q["question"] for q in PARAMS["eval_questions"]]
    for row in evaluation["questions"]:
        for side in ("base", "tuned"):
            assert set(row[side]) == {"answer", "contains", "recall", "f1"}
    assert set(evaluation["tuned"]) == {"contains", "recall", "f1"}

    progress = read_progress(run.job.progress_file)
    assert [entry["step"] for entry in progress] == list(range(1, STEPS + 1))
    assert all(entry["total"] == STEPS for entry in progress)
    assert [entry["loss"] for entry in progress] == losses

    assert sorted(p.name for p in run.job.checkpoint_dir.iterdir()) == ["step-00000036", "step-00000040"]

    config = json.loads((run.adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (8, 16, tiny_model.name)
    weights = load_file(run.adapter / "adapter_model.safetensors")
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run.adapter)
    loaded = {name: param for name, param in tuned.named_parameters() if "lora_" in name}
    assert len(loaded) == len(weights) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    assert all(param.abs().sum() > 0 for param in loaded.values())


def test_same_inputs_and_seed_give_identical_adapter_bytes(runs: Runs) -> None:
    first, second = runs.first, runs.second
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (first.adapter / name).read_bytes() == (second.adapter / name).read_bytes(), name
    assert first.metrics() == second.metrics()


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(runs: Runs) -> None:
    run, killed_at = runs.killed, runs.killed_at_step
    assert 4 <= killed_at < STEPS, "the kill must land mid-training"
    assert not (run.job.outputs_dir / "metrics.json").exists()

    run_engine(ENGINE, run.job, workspace=run.workspace, timeout=300, threads=1)
    metrics = run.metrics()
    resumed_from = metrics["resumed_from_step"]
    assert 4 <= resumed_from <= killed_at and resumed_from % 4 == 0
    steps = [entry["step"] for entry in read_progress(run.job.progress_file)]
    assert steps[killed_at:] == list(range(resumed_from + 1, STEPS + 1)), "the step counter continues"
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (run.adapter / name).read_bytes() == (runs.first.adapter / name).read_bytes(), name
    assert metrics["loss_curve"] == runs.first.metrics()["loss_curve"]
    assert metrics["evaluation"] == runs.first.metrics()["evaluation"]


def test_a_malformed_dataset_fails_the_job_with_file_and_line(tiny_model: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, tiny_model)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(demo_dataset_path().read_text().splitlines()[0] + "\n{truncated\n")
    job = replace(run.job, inputs={"model": (tiny_model,), "datasets": (bad,)})
    with pytest.raises(EngineFailed, match=r"code 2: error\[engine_job_invalid\]: bad.jsonl line 2 is not JSON"):
        run_engine(ENGINE, job, workspace=run.workspace, timeout=300, threads=1)
    assert not any(job.outputs_dir.iterdir())


@pytest.mark.parametrize(
    ("job_json", "message"),
    [
        (b'{"inputs": ', "job.json is not valid JSON"),
        (b"{}", "job.json is missing"),
        (
            b'{"inputs": {"model": ["m.gguf"], "datasets": ["d.jsonl"]}, "params": {"epoch": 1},'
            b' "outputs_dir": "o", "checkpoint_dir": "c", "progress_file": "p"}',
            "no parameter\\(s\\) epoch",
        ),
        (
            b'{"inputs": {"model": ["a.gguf", "b.gguf"], "datasets": ["d.jsonl"]}, "params": {},'
            b' "outputs_dir": "o", "checkpoint_dir": "c", "progress_file": "p"}',
            "input 'model' of the lora_finetune engine takes 1 to 1 file",
        ),
    ],
)
def test_a_bad_job_file_exits_non_zero_with_a_clear_error(tmp_path: Path, job_json: bytes, message: str) -> None:
    (tmp_path / "job.json").write_bytes(job_json)
    done = subprocess.run(
        [sys.executable, "-B", "-m", "lora_engine"],
        env=engine_env(ENGINE, tmp_path / "job.json", tmp_path, threads=1),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error[engine_job_invalid]: ")
    assert re.search(message, done.stderr), done.stderr
