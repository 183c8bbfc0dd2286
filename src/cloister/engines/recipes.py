"""Tested ``lora_finetune`` parameters for the shipped demo datasets, shared by the benchmarks, tests and demo.

The overhead benchmark must run the plain baseline and the full Cloister order with the same parameters; keeping
them here makes that true by construction. The demo trains on two private-looking datasets, a clinic's protocols
and a lab's rules (``cloister.client.assets.demo_datasets``), invented so the base model cannot know them. The
questions are held out: the datasets teach these facts only through other wordings ("Where is the crash cart
kept?", "Who is the lab safety officer?", ...).
"""

from __future__ import annotations

from typing import Any

DEMO_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("Our patient has no pulse. Which room do I run to for the cart with the defibrillator?", "room C-14"),
    ("Which colleague can I phone about a sick patient on a Sunday afternoon?", "Dr. Okafor"),
    ("A visitor is becoming violent in the waiting room. Which code do I call?", "Code Heron"),
    ("Where do I find the MMR vaccine before a child's appointment?", "fridge V2"),
    ("How fast should the plasma tubes be spun?", "4000 rpm"),
    ("I'm going to evaporate some hexane. Where should I do that?", "hood 3"),
    ("Who should hear about a chemical burn in the lab?", "Marta Lindqvist"),
    ("I want to run proteomics samples. Which instrument do I reserve?", "Marlin"),
)


def demo_finetune_params() -> dict[str, Any]:
    """SmolLM2-135M-Instruct on the clinic and lab datasets (128 conversations): 18 steps, about a minute of
    training on 2 CPU cores."""
    return {
        "seed": 0,
        "steps": 18,
        "batch_size": 8,
        "learning_rate": 0.006,
        "max_new_tokens": 24,
        "eval_questions": [{"question": question, "expected": expected} for question, expected in DEMO_QUESTIONS],
    }


def tiny_finetune_params() -> dict[str, Any]:
    """The same job sized for the tiny random model (:mod:`cloister.engines.tiny`) and the 24-line support log
    (``demo_dataset_path``): six epochs of 3 steps, a second or two of training."""
    return {
        **demo_finetune_params(),
        "steps": 0,
        "epochs": 6,
        "learning_rate": 0.01,
        "max_length": 96,
        "max_new_tokens": 8,
    }
