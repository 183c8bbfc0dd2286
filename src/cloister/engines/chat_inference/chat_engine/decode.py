"""Deterministic decoding, one token at a time, with the text released as it becomes final.

Greedy when the temperature is 0 (the first of equal maxima), else sampling from a per-request
``torch.Generator(seed)`` by inverse CDF over the probabilities in float64: no global RNG, no thread-dependent
sampler, so the same request, seed, inputs and thread count give the same token ids in any process. The text of
a non-streamed answer is the concatenation of the streamed deltas, so both forms always say the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from cloister.errors import InvalidRequest, JobInvalid

from .model import Loaded

FinishReason = Literal["stop", "length"]
_SEED_MASK = (1 << 64) - 1
_INCOMPLETE = "\ufffd"  # what a byte-level tokenizer decodes half a UTF-8 character to


@dataclass(frozen=True)
class Decoding:
    """How to pick tokens and when to stop."""

    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: tuple[str, ...]


@dataclass(frozen=True)
class Completion:
    """A finished answer: every generated token id (an end-of-sequence token included), its text and why it ended."""

    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    prompt_tokens: int


def prompt_ids(loaded: Loaded, messages: Sequence[dict[str, str]]) -> list[int]:
    """The conversation rendered with the model's chat template, ready for the assistant's answer."""
    try:
        text = loaded.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    except TemplateError as exc:  # templates may refuse some role orders, e.g. two system messages
        raise InvalidRequest(f"the model's chat template refuses these messages: {exc}", param="messages") from None
    if not isinstance(text, str):
        raise JobInvalid("the model's chat template did not render to text")
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(token) for token in ids]


def next_token(logits: torch.Tensor, decoding: Decoding, generator: torch.Generator) -> int:
    """Pick the next token from one row of logits."""
    if decoding.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.to(torch.float64) / decoding.temperature, dim=-1)
    ranked, order = torch.sort(probs, descending=True, stable=True)
    if decoding.top_p < 1:
        kept = int(torch.count_nonzero(torch.cumsum(ranked, 0) - ranked < decoding.top_p))
        ranked, order = ranked[: max(kept, 1)], order[: max(kept, 1)]
    cdf = torch.cumsum(ranked, 0)
    draw = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1]
    index = min(int(torch.searchsorted(cdf, draw, right=True)), len(order) - 1)
    return int(order[index])


class _Text:
    """Decodes the ids so far and releases text that can no longer change: not half a character, not the start
    of a stop string, never past a stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...]) -> None:
        self._tokenizer, self._stop = tokenizer, tuple(s for s in stop if s)
        self.emitted = ""
        self.stopped = False

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def _release(self, text: str) -> str:
        """Emit ``text`` if it extends what was emitted (decoders may rewrite a tail; then wait)."""
        if not text.startswith(self.emitted):
            return ""
        delta, self.emitted = text[len(self.emitted) :], text
        return delta

    def push(self, ids: Sequence[int]) -> str:
        full = self._decode(ids)
        hits = [index for index in (full.find(stop) for stop in self._stop) if index >= 0]
        if hits:
            self.stopped = True
            return self._release(full[: max(min(hits), len(self.emitted))])
        safe = full.rstrip(_INCOMPLETE)
        held = max((n for stop in self._stop for n in range(1, len(stop)) if safe.endswith(stop[:n])), default=0)
        return self._release(safe[: len(safe) - held])

    def finish(self, ids: Sequence[int]) -> str:
        return "" if self.stopped else self._release(self._decode(ids))


def generate(
    loaded: Loaded, prompt: Sequence[int], decoding: Decoding, cancelled: Callable[[], bool]
) -> Iterator[str | Completion]:
    """Yield text deltas as they become final, then the :class:`Completion`; stop early once ``cancelled()``."""
    generator = torch.Generator().manual_seed(decoding.seed & _SEED_MASK)
    text = _Text(loaded.tokenizer, decoding.stop)
    ids: list[int] = []
    finish: FinishReason = "length"
    feed, cache = torch.tensor([list(prompt)]), None
    with torch.inference_mode():
        while len(ids) < decoding.max_tokens:
            if cancelled():
                return
            out: Any = loaded.model(input_ids=feed, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            token = next_token(out.logits[0, -1], decoding, generator)
            ids.append(token)
            if token in loaded.eos_ids:
                finish = "stop"
                break
            if delta := text.push(ids):
                yield delta
            if text.stopped:
                finish = "stop"
                break
            feed = torch.tensor([[token]])
    if tail := text.finish(ids):
        yield tail
    yield Completion(tuple(ids), text.emitted, finish, len(prompt))
