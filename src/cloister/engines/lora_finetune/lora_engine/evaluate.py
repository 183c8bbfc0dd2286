"""Before/after evaluation: the base and the tuned model answer each held-out question greedily, and are scored.

Scores compare words after normalisation (lower case, punctuation to spaces, articles dropped): ``contains`` says
whether the expected answer's words appear in the answer in order and next to each other (it states the fact),
``recall`` is the share of the expected words that appear anywhere (partly right), and ``f1`` is the SQuAD-style
token F1 (it also penalises rambling). Means over the questions lie in [0, 1].
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from .config import EvalQuestion

_ARTICLES = frozenset({"a", "an", "the"})
_NON_WORD = re.compile(r"[^0-9a-z]+")


def words(text: str) -> list[str]:
    return [word for word in _NON_WORD.sub(" ", text.lower()).split() if word not in _ARTICLES]


def contains(answer: str, expected: str) -> bool:
    wanted, got = words(expected), words(answer)
    return bool(wanted) and any(got[i : i + len(wanted)] == wanted for i in range(len(got) - len(wanted) + 1))


def recall(answer: str, expected: str) -> float:
    wanted = Counter(words(expected))
    if not wanted:
        return 0.0
    return sum((wanted & Counter(words(answer))).values()) / sum(wanted.values())


def f1(answer: str, expected: str) -> float:
    got, wanted = Counter(words(answer)), Counter(words(expected))
    common = sum((got & wanted).values())
    if common == 0:
        return 0.0
    precision, coverage = common / sum(got.values()), common / sum(wanted.values())
    return 2 * precision * coverage / (precision + coverage)


def answer(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, question: str, max_new_tokens: int) -> str:
    """The model's greedy answer to one user message, rendered with the chat template."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(  # type: ignore[operator]
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return str(tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)).strip()


def _scored(text: str, expected: str) -> dict[str, Any]:
    return {
        "answer": text,
        "contains": contains(text, expected),
        "recall": round(recall(text, expected), 4),
        "f1": round(f1(text, expected), 4),
    }


def evaluate(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, questions: Sequence[EvalQuestion], max_new_tokens: int
) -> dict[str, Any]:
    """Per question, the base model's (adapter disabled) and the tuned model's answer and scores; and the means."""
    model.eval()
    rows: list[dict[str, Any]] = []
    for item in questions:
        with model.disable_adapter():
            base = answer(model, tokenizer, item.question, max_new_tokens)
        tuned = answer(model, tokenizer, item.question, max_new_tokens)
        rows.append(
            {
                "question": item.question,
                "expected": item.expected,
                "base": _scored(base, item.expected),
                "tuned": _scored(tuned, item.expected),
            }
        )
    means = {
        side: {
            score: round(sum(float(row[side][score]) for row in rows) / len(rows), 4) if rows else None
            for score in ("contains", "recall", "f1")
        }
        for side in ("base", "tuned")
    }
    return {
        "scoring": "contains, word recall and token F1 against 'expected', see docs/engines.md",
        "questions": rows,
        **means,
    }
