"""The LoRA engine's parts in process: dataset parsing, assistant-only labels, batch order, scores, checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from cloister.client.assets import demo_dataset_path
from cloister.engines.lora_finetune.lora_engine import checkpoint
from cloister.engines.lora_finetune.lora_engine.config import TrainConfig, fingerprint
from cloister.engines.lora_finetune.lora_engine.data import IGNORE, Schedule, build_examples, collate, encode
from cloister.engines.lora_finetune.lora_engine.dataset import read_conversations
from cloister.engines.lora_finetune.lora_engine.evaluate import contains, f1, recall
from cloister.engines.lora_finetune.lora_engine.model import attach_lora
from cloister.errors import JobInvalid


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model)


def _jsonl(path: Path, *lines: Any) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def _chat(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


# --- datasets --------------------------------------------------------------------------------------------------


def test_read_conversations_in_file_and_line_order(tmp_path: Path) -> None:
    first = _jsonl(tmp_path / "a.jsonl", _chat(("user", "q1"), ("assistant", "a1")), "", _chat(("assistant", "a2")))
    second = _jsonl(tmp_path / "b.jsonl", {**_chat(("user", "q3"), ("assistant", "a3")), "id": 7})
    conversations = read_conversations([first, second])
    assert [c[-1]["content"] for c in conversations] == ["a1", "a2", "a3"]
    assert len(read_conversations([demo_dataset_path()])) == 24


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "a.jsonl line 2 is not JSON"),
        ({"text": "hello"}, 'line 2: expected an object with a non-empty "messages"'),
        ({"messages": []}, "non-empty"),
        (_chat(("robot", "hi"), ("assistant", "a")), "message 0 must be"),
        ({"messages": [{"role": "user", "content": "q", "name": "x"}]}, "and nothing else"),
        ({"messages": [{"role": "user", "content": 3}]}, "message 0 must be"),
        (_chat(("user", "q"), ("user", "again")), "no assistant message"),
    ],
)
def test_malformed_dataset_lines_name_file_and_line(tmp_path: Path, line: Any, message: str) -> None:
    path = _jsonl(tmp_path / "a.jsonl", _chat(("user", "q"), ("assistant", "a")), line)
    with pytest.raises(JobInvalid, match=message):
        read_conversations([path])


def test_unreadable_or_empty_datasets(tmp_path: Path) -> None:
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(JobInvalid, match=r"cannot read the dataset bin\.jsonl"):
        read_conversations([tmp_path / "bin.jsonl"])
    with pytest.raises(JobInvalid, match="cannot read"):
        read_conversations([tmp_path / "missing.jsonl"])
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(JobInvalid, match="no conversation"):
        read_conversations([tmp_path / "empty.jsonl"])


# --- encoding --------------------------------------------------------------------------------------------------


def test_labels_cover_exactly_the_assistant_turns(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is Cloister?"},
        {"role": "assistant", "content": "A marketplace."},
        {"role": "user", "content": "Who pays?"},
        {"role": "assistant", "content": "The contract."},
    ]
    example = encode(tokenizer, messages, max_length=512)
    assert example is not None
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(list(example.input_ids)) == full
    learned = [token for token, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(learned) == "A marketplace.<|im_end|>\nThe contract.<|im_end|>\n"
    assert all(label in (IGNORE, token) for token, label in zip(example.input_ids, example.labels, strict=True))


def test_truncation_drops_conversations_without_an_answer_left(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "answer"}]
    full = encode(tokenizer, messages, max_length=4096)
    assert full is not None
    prompt = next(i for i, label in enumerate(full.labels) if label != IGNORE)  # tokens before the answer
    assert encode(tokenizer, messages, max_length=prompt) is None
    cut = encode(tokenizer, messages, max_length=prompt + 1)
    assert cut is not None and len(cut.input_ids) == len(cut.labels) == prompt + 1
    assert cut.labels[-1] != IGNORE and set(cut.labels[:-1]) == {IGNORE}
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    examples, skipped = build_examples(tokenizer, [messages, short], max_length=prompt)
    assert (len(examples), skipped) == (1, 1)
    with pytest.raises(JobInvalid, match="raise max_length"):
        build_examples(tokenizer, [messages], max_length=prompt)


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer: PreTrainedTokenizerBase) -> None:
    odd = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    odd.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(JobInvalid, match="chat template"):
        encode(odd, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], max_length=64)


def test_collate_pads_and_masks(tokenizer: PreTrainedTokenizerBase) -> None:
    convs = [[{"role": "user", "content": "q" * n}, {"role": "assistant", "content": "a"}] for n in (1, 9)]
    examples, _ = build_examples(tokenizer, convs, max_length=64)
    batch = collate(examples, pad_id=0)
    short = len(examples[0].input_ids)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(examples[1].input_ids))
    assert batch["attention_mask"][0].tolist() == [1] * short + [0] * (batch["input_ids"].shape[1] - short)
    assert (batch["labels"][0, short:] == IGNORE).all()


def test_schedule_is_a_seeded_permutation_per_epoch() -> None:
    schedule = Schedule(examples=10, batch_size=4, seed=7)
    assert schedule.steps_per_epoch == 3
    epoch0 = [i for step in range(3) for i in schedule.batch(step)]
    epoch1 = [i for step in range(3, 6) for i in schedule.batch(step)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
    assert [Schedule(10, 4, 7).batch(s) for s in range(6)] == [schedule.batch(s) for s in range(6)]
    assert [Schedule(10, 4, 8).batch(s) for s in range(3)] != [schedule.batch(s) for s in range(3)]


# --- parameters and scores -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"eval_questions": [{"question": "q"}]}, r"eval_questions\[0\]"),
        ({"eval_questions": [{"question": "q", "expected": " "}]}, r"eval_questions\[0\]"),
        ({"eval_questions": [{"question": "q", "expected": "a", "x": 1}]}, r"eval_questions\[0\]"),
        ({"target_modules": []}, "at least one layer"),
        ({"learning_rate": 0}, None),
        ({"batch_size": 0}, "must be >= 1"),
        ({"lora_dropout": 1.0}, "must be <= 0.9"),
    ],
)
def test_train_config_validation(params: dict[str, Any], message: str | None) -> None:
    if message is None:
        assert TrainConfig.from_params(params).learning_rate == 0.0
        return
    with pytest.raises(JobInvalid, match=message):
        TrainConfig.from_params(params)


def test_fingerprint_covers_what_changes_the_weights(tiny_model: Path, tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "a.jsonl", _chat(("user", "q"), ("assistant", "a")))
    config = TrainConfig.from_params({})
    base = fingerprint(config, tiny_model, [data])
    same = TrainConfig.from_params({"checkpoint_every": 3, "max_new_tokens": 5, "eval_questions": []})
    assert fingerprint(same, tiny_model, [data]) == base
    assert fingerprint(TrainConfig.from_params({"seed": 1}), tiny_model, [data]) != base
    assert fingerprint(TrainConfig.from_params({"learning_rate": 0.1}), tiny_model, [data]) != base
    assert fingerprint(config, tiny_model, [data, data]) != base
    model = shutil.copytree(tiny_model, tmp_path / "model")
    assert fingerprint(config, model, [data]) == base
    (model / "config.json").write_text((model / "config.json").read_text().replace("0.5", "0.25"))
    assert fingerprint(config, model, [data]) != base
    data.write_text(data.read_text().replace('"a"', '"b"'))
    assert fingerprint(config, tiny_model, [data]) != base
    with pytest.raises(JobInvalid, match=r"cannot read the input missing\.gguf"):
        fingerprint(config, tmp_path / "missing.gguf", [data])


def test_scores() -> None:
    expected = "cloister devnet down"
    good = "Run `cloister devnet down`. The data stays."
    assert contains(good, expected) and recall(good, expected) == 1.0
    assert 0 < f1(good, expected) < 1
    assert f1("The cloister devnet down", expected) == 1.0  # articles and case do not count
    scrambled = "down with the devnet, says cloister"
    assert not contains(scrambled, expected) and recall(scrambled, expected) == 1.0
    assert recall("Stop the devnet", expected) == pytest.approx(1 / 3)
    assert (contains("", expected), recall("", expected), f1("", expected)) == (False, 0.0, 0.0)
    assert not contains("anything", "!!")


# --- checkpoints -----------------------------------------------------------------------------------------------


def _lora(tiny_model: Path, seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_model), TrainConfig.from_params({"seed": seed}))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    batch = {"input_ids": torch.tensor([[1, 5, 9, 2]]), "labels": torch.tensor([[1, 5, 9, 2]])}
    model(**batch).loss.backward()
    optimizer.step()
    return model, optimizer


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_checkpoint_round_trip_and_refusals(tiny_model: Path, tmp_path: Path) -> None:
    model, optimizer = _lora(tiny_model, seed=1)
    assert checkpoint.restore(tmp_path, model=model, optimizer=optimizer, fingerprint="job") is None
    for step in (3, 6, 9):
        checkpoint.save(tmp_path, step=step, model=model, optimizer=optimizer, losses=[1.0] * step, fingerprint="job")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000006", "step-00000009"]
    rng_after_save = torch.get_rng_state()
    saved = _trainable(model)

    other, other_optimizer = _lora(tiny_model, seed=2)
    assert any(not torch.equal(saved[name], value) for name, value in _trainable(other).items())
    torch.manual_seed(123)
    resumed = checkpoint.restore(tmp_path, model=other, optimizer=other_optimizer, fingerprint="job")
    assert resumed is not None and (resumed.step, len(resumed.losses)) == (9, 9)
    assert all(torch.equal(saved[name], value) for name, value in _trainable(other).items())
    assert torch.equal(torch.get_rng_state(), rng_after_save)
    assert other_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()

    with pytest.raises(JobInvalid, match="belongs to another job"):
        checkpoint.restore(tmp_path, model=other, optimizer=other_optimizer, fingerprint="another job")
    (tmp_path / "step-00000009" / checkpoint.STATE).write_bytes(b"truncated")
    with pytest.raises(JobInvalid, match="step-00000009 cannot be read"):
        checkpoint.restore(tmp_path, model=other, optimizer=other_optimizer, fingerprint="job")


def test_a_half_written_checkpoint_is_ignored(tiny_model: Path, tmp_path: Path) -> None:
    model, optimizer = _lora(tiny_model, seed=1)
    checkpoint.save(tmp_path, step=2, model=model, optimizer=optimizer, losses=[1.0, 0.5], fingerprint="job")
    (tmp_path / ".partial-step-00000004").mkdir()
    (tmp_path / "step-00000005").mkdir()  # no files: not a complete checkpoint
    resumed = checkpoint.restore(tmp_path, model=model, optimizer=optimizer, fingerprint="job")
    assert resumed is not None and resumed.step == 2
    checkpoint.save(tmp_path, step=4, model=model, optimizer=optimizer, losses=[1.0] * 4, fingerprint="job")
    assert not (tmp_path / ".partial-step-00000004").exists()
