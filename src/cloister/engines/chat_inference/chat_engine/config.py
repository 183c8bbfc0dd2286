"""The job checked and typed against this bundle's own ``engine.toml``, before any heavy library is imported."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cloister.engines.job import JobSpec
from cloister.engines.manifest import EngineManifest, load_manifest
from cloister.errors import JobInvalid

BUNDLE_DIR = Path(__file__).resolve().parent.parent
ADAPTER_CONFIG = "adapter_config.json"


@cache
def manifest() -> EngineManifest:
    return load_manifest(BUNDLE_DIR)


@dataclass(frozen=True)
class ServeConfig:
    """What to load and where to serve it; ``threads``/``max_context`` 0 mean "from the environment/the model"."""

    model: Path
    adapters: tuple[Path, ...]
    port: int
    threads: int
    max_context: int


def prepare(job: JobSpec) -> ServeConfig:
    """Check inputs and parameters; an adapter must be a PEFT folder (the loader unpacks ``….tar`` offers)."""
    manifest().check_inputs(job.inputs)
    params = manifest().resolve_params(job.params)
    (model,) = job.inputs["model"]
    adapters = tuple(job.inputs.get("adapters", ()))
    for adapter in adapters:
        if not (adapter / ADAPTER_CONFIG).is_file():
            raise JobInvalid(
                f"the adapter input {adapter.name} is not a PEFT adapter folder with {ADAPTER_CONFIG}; "
                "publish the adapter folder as a .tar (the fine-tuning result is one)"
            )
    return ServeConfig(
        model=model,
        adapters=adapters,
        port=params["port"],
        threads=params["threads"],
        max_context=params["max_context"],
    )
