"""Checkpoints: everything needed to continue training exactly where it stopped.

A checkpoint is a folder ``step-00000010`` holding the trainable weights (safetensors) and ``state.pt`` (optimizer
state, RNG state, step, loss history, job fingerprint; loaded with ``weights_only``, so it cannot run code). It is
written under a temporary name and renamed, so a kill at any moment leaves either the whole checkpoint or none.
The two newest are kept, for the loader to copy out while the next one is written.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cloister.errors import JobInvalid

WEIGHTS = "trainable.safetensors"
STATE = "state.pt"
KEEP = 2
_NAME_RE = re.compile(r"^step-(\d{8})$")
_PARTIAL_PREFIX = ".partial-"


@dataclass(frozen=True)
class Resumed:
    step: int
    losses: list[float]
    path: Path


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def _complete(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in checkpoint_dir.iterdir() if checkpoint_dir.is_dir() else ():
        match = _NAME_RE.match(path.name)
        if match and (path / WEIGHTS).is_file() and (path / STATE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def save(
    checkpoint_dir: Path,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    losses: list[float],
    fingerprint: str,
) -> Path:
    """Write the checkpoint after ``step`` steps atomically and drop all but the newest :data:`KEEP`."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    for stale in checkpoint_dir.glob(_PARTIAL_PREFIX + "*"):
        shutil.rmtree(stale)
    final = checkpoint_dir / f"step-{step:08d}"
    partial = checkpoint_dir / (_PARTIAL_PREFIX + final.name)
    partial.mkdir()
    save_file({name: p.detach().contiguous() for name, p in _trainable(model).items()}, partial / WEIGHTS)
    state = {
        "step": step,
        "losses": list(losses),
        "fingerprint": fingerprint,
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),
    }
    torch.save(state, partial / STATE)
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    for _, old in _complete(checkpoint_dir)[:-KEEP]:
        shutil.rmtree(old)
    return final


def restore(
    checkpoint_dir: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, fingerprint: str
) -> Resumed | None:
    """Load the newest checkpoint into ``model`` and ``optimizer`` and the RNG; None when there is none."""
    complete = _complete(checkpoint_dir)
    if not complete:
        return None
    step, path = complete[-1]
    try:
        weights = load_file(path / WEIGHTS)
        state = torch.load(path / STATE, weights_only=True)
    except Exception as exc:  # damaged bytes make safetensors and the unpickler raise many different types
        raise JobInvalid(
            f"the checkpoint {path.name} cannot be read ({exc}); remove it to resume from an older one"
        ) from None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        raise JobInvalid(
            f"the checkpoint {path.name} belongs to another job (other model, datasets or hyper-parameters); "
            "start this job with an empty checkpoint_dir"
        )
    params = _trainable(model)
    if set(weights) != set(params) or state.get("step") != step:
        raise JobInvalid(f"the checkpoint {path.name} does not match this model's LoRA layers or its own name")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return Resumed(step=step, losses=[float(loss) for loss in state["losses"]], path=path)
