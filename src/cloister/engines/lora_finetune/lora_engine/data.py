"""Conversations → token ids with labels on the assistant's tokens only, and the seeded batch order.

A conversation is rendered with the tokenizer's own chat template piece by piece: each assistant turn is the text
the template adds after the generation prompt, so training sees exactly the split the model meets when it answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from cloister.errors import JobInvalid

from .dataset import Message

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[Message], prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
    if not isinstance(text, str):
        raise JobInvalid("the model's chat template did not render to text")
    return text


def _tail(longer: str, shorter: str) -> str:
    if not longer.startswith(shorter):
        raise JobInvalid(
            "the model's chat template renders a conversation differently from its prefix, so answers cannot be "
            "told apart from prompts; use a model with a standard (ChatML-like) chat template"
        )
    return longer[len(shorter) :]


def encode(tokenizer: PreTrainedTokenizerBase, messages: list[Message], max_length: int) -> Example | None:
    """Token ids and labels (assistant turns only) cut to ``max_length``; None if no answer token is left."""
    ids: list[int] = []
    labels: list[int] = []
    done = ""

    def add(text: str, learn: bool) -> None:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if learn else [IGNORE] * len(piece))

    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = _render(tokenizer, messages[:index], True)
            add(_tail(prompt, done), learn=False)
            done = prompt
        full = _render(tokenizer, messages[: index + 1], False)
        add(_tail(full, done), learn=message["role"] == "assistant")
        done = full
    labels = labels[:max_length]
    if all(label == IGNORE for label in labels):
        return None
    return Example(input_ids=tuple(ids[:max_length]), labels=tuple(labels))


def build_examples(
    tokenizer: PreTrainedTokenizerBase, conversations: list[list[Message]], max_length: int
) -> tuple[list[Example], int]:
    """The encoded examples and how many conversations were dropped for having no answer within ``max_length``."""
    encoded = [encode(tokenizer, messages, max_length) for messages in conversations]
    examples = [example for example in encoded if example is not None]
    if not examples:
        raise JobInvalid(f"no conversation has an assistant answer within max_length={max_length}; raise max_length")
    return examples, len(encoded) - len(examples)


@dataclass(frozen=True)
class Schedule:
    """Which examples each step trains on: a fresh seeded permutation per epoch, so any step can be recomputed."""

    examples: int
    batch_size: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.examples / self.batch_size)

    def batch(self, step: int) -> list[int]:
        """Example indices for 0-based ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.examples, generator=generator).tolist()
        return order[position * self.batch_size : (position + 1) * self.batch_size]


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding is masked out of attention and loss."""
    width = max(len(example.input_ids) for example in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        size = len(example.input_ids)
        ids[row, :size] = torch.tensor(example.input_ids)
        labels[row, :size] = torch.tensor(example.labels)
        mask[row, :size] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
