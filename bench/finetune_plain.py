"""LoRA fine-tuning as a plain in-process PEFT script on plaintext files: the baseline for the overhead benchmark.

It runs exactly the training of the ``lora_finetune`` engine (the same functions, parameters and seed) but without
anything Cloister adds around it: no bundle, no job file, no separate process, no checkpoints, no encryption. A full
Cloister order doing the same work is compared against this (``bench/finetune_overhead.py``). Prints the wall time
of each phase, including importing torch/transformers/PEFT, which a fresh process always pays.

    .venv/bin/python bench/finetune_plain.py --model real   # SmolLM2-135M-Instruct GGUF, demo dataset
    .venv/bin/python bench/finetune_plain.py --model tiny   # the tiny random model, in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from cloister.client.assets import demo_dataset_path, smollm2_path
from cloister.engines.job import JobSpec
from cloister.engines.recipes import demo_finetune_params, tiny_finetune_params


def _tiny_model(folder: Path) -> Path:
    from cloister.engines.tiny import make_tiny_model

    lines = demo_dataset_path().read_text(encoding="utf-8").splitlines()
    corpus = [message["content"] for line in lines for message in json.loads(line)["messages"]]
    return make_tiny_model(folder / "tiny-llama", corpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["real", "tiny"], default="real")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--steps", type=int, help="override: run this many steps")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()

    started = time.perf_counter()
    from cloister.engines.lora_finetune.lora_engine.config import prepare
    from cloister.engines.lora_finetune.lora_engine.run import run

    imported = time.perf_counter() - started
    params = demo_finetune_params() if args.model == "real" else tiny_finetune_params()
    params["checkpoint_every"] = 0
    params.update({key: value for key, value in (("epochs", args.epochs), ("steps", args.steps)) if value})

    with tempfile.TemporaryDirectory(prefix="finetune-plain-") as scratch:
        root = Path(scratch)
        model = smollm2_path() if args.model == "real" else _tiny_model(root)
        job = JobSpec(
            inputs={"model": (model,), "datasets": (demo_dataset_path(),)},
            params=params,
            outputs_dir=root / "outputs",
            checkpoint_dir=root / "checkpoints",
            progress_file=root / "progress.jsonl",
        )
        began = time.perf_counter()
        prepared = prepare(job)
        prepared_in = time.perf_counter() - began
        outcome = run(job, prepared, threads=args.threads)

    metrics = outcome.metrics
    phases = {"import": imported, "prepare": prepared_in, **outcome.seconds}
    total = sum(phases.values())
    print(f"model {args.model} ({model.name}), {metrics['examples']} examples, {metrics['steps']} steps, ", end="")
    print(f"{args.threads} threads")
    for name, seconds in phases.items():
        print(f"  {name:<9} {seconds:8.1f} s  {100 * seconds / total:5.1f} %")
    print(f"  {'total':<9} {total:8.1f} s")
    print(f"  per step  {outcome.seconds['train'] / metrics['steps']:8.2f} s")
    losses = [point["loss"] for point in metrics["loss_curve"]]
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    evaluation = metrics["evaluation"]
    for side in ("base", "tuned"):
        means = ", ".join(f"{score} {value:.2f}" for score, value in evaluation[side].items())
        print(f"{side:<5} {means}")
    for row in evaluation["questions"]:
        print(f"Q: {row['question']}\n  base:  {row['base']['answer']!r}\n  tuned: {row['tuned']['answer']!r}")


if __name__ == "__main__":
    main()
