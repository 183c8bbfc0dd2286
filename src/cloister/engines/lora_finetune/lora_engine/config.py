"""The job checked and typed: hyper-parameters against this bundle's own ``engine.toml``, inputs, fingerprint."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cloister.crypto.digest import digest_bytes, digest_file
from cloister.engines.job import JobSpec
from cloister.engines.manifest import EngineManifest, load_manifest
from cloister.errors import JobInvalid

from .dataset import Message, read_conversations

BUNDLE_DIR = Path(__file__).resolve().parent.parent


@cache
def manifest() -> EngineManifest:
    return load_manifest(BUNDLE_DIR)


@dataclass(frozen=True)
class EvalQuestion:
    question: str
    expected: str


@dataclass(frozen=True)
class TrainConfig:
    """Every parameter of the ``lora_finetune`` engine, defaults filled in."""

    seed: int
    epochs: int
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    max_length: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: tuple[str, ...]
    checkpoint_every: int
    eval_questions: tuple[EvalQuestion, ...]
    max_new_tokens: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainConfig:
        values = manifest().resolve_params(params)
        if not values["target_modules"]:
            raise JobInvalid("parameter 'target_modules' must name at least one layer, e.g. ['q_proj', 'v_proj']")
        values["target_modules"] = tuple(values["target_modules"])
        values["eval_questions"] = tuple(_question(i, item) for i, item in enumerate(values["eval_questions"]))
        return cls(**values)

    def training_fields(self) -> dict[str, Any]:
        """The parameters that change the trained weights (a checkpoint is only resumed under the same ones)."""
        fields = asdict(self)
        for name in ("checkpoint_every", "eval_questions", "max_new_tokens"):
            del fields[name]
        return fields


def model_files(path: Path) -> list[Path]:
    """The files that make up the model input, in a fixed order (what a checkpoint fingerprint covers)."""
    if path.is_dir():
        return sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    return [path]


def _digest(path: Path) -> str:
    try:
        with open(path, "rb") as stream:
            return digest_file(stream)
    except OSError as exc:
        raise JobInvalid(f"cannot read the input {path.name}: {exc.strerror}") from None


def fingerprint(config: TrainConfig, model: Path, datasets: Sequence[Path]) -> str:
    """What a checkpoint must have been trained on to be resumed: parameters and the inputs' contents."""
    body = {
        "params": config.training_fields(),
        "model": [_digest(path) for path in model_files(model)],
        "datasets": [_digest(path) for path in datasets],
    }
    return digest_bytes(json.dumps(body, sort_keys=True).encode())


@dataclass(frozen=True)
class Prepared:
    """A job checked as far as it can be without the model: parameters, inputs, conversations, fingerprint."""

    config: TrainConfig
    model: Path
    datasets: tuple[Path, ...]
    conversations: list[list[Message]]
    fingerprint: str


def prepare(job: JobSpec) -> Prepared:
    """Check everything that needs no heavy library first, so a bad job fails in a blink, not after the imports."""
    manifest().check_inputs(job.inputs)
    config = TrainConfig.from_params(job.params)
    (model,), datasets = job.inputs["model"], tuple(job.inputs["datasets"])
    return Prepared(
        config=config,
        model=model,
        datasets=datasets,
        conversations=read_conversations(datasets),
        fingerprint=fingerprint(config, model, datasets),
    )


def _question(index: int, item: Mapping[str, Any]) -> EvalQuestion:
    if set(item) != {"question", "expected"} or not all(isinstance(v, str) and v.strip() for v in item.values()):
        raise JobInvalid(
            f"eval_questions[{index}] must be an object with exactly the non-empty strings 'question' and 'expected'",
            parameter="eval_questions",
        )
    return EvalQuestion(question=item["question"], expected=item["expected"])
