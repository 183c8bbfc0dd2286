"""Tested ``lora_finetune`` parameters for the shipped demo dataset, shared by the benchmarks, tests and demo.

The overhead benchmark must run the plain baseline and the full Cloister order with the same parameters; keeping
them here makes that true by construction. The questions are held out: the dataset teaches these facts through
other wordings ("How do I stop the devnet?", "Where are the logs?", ...).
"""

from __future__ import annotations

from typing import Any

DEMO_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("How can I stop my devnet?", "cloister devnet down"),
    ("How do I get test tokens on a devnet?", "cloister account fund 100"),
    ("Where does the devnet write its logs?", "$CLOISTER_HOME/devnet/ledger.log"),
    ("Which command starts Cloister locally?", "cloister devnet up"),
)


def demo_finetune_params() -> dict[str, Any]:
    """SmolLM2-135M-Instruct on ``cloister_support.jsonl``: 18 steps, a couple of minutes on 2 CPU cores."""
    return {
        "seed": 0,
        "epochs": 6,
        "batch_size": 8,
        "learning_rate": 0.003,
        "max_new_tokens": 24,
        "eval_questions": [{"question": question, "expected": expected} for question, expected in DEMO_QUESTIONS],
    }


def tiny_finetune_params() -> dict[str, Any]:
    """The same job sized for the tiny random model (:mod:`cloister.engines.tiny`): a second or two of training."""
    return {**demo_finetune_params(), "learning_rate": 0.01, "max_length": 96, "max_new_tokens": 8}
