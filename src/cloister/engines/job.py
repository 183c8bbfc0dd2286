"""The job an engine runs: ``job.json``, named by the ``CLOISTER_JOB`` environment variable.

The loader writes it and the engine reads it; both sides use this one type so they cannot drift apart. Progress
flows back the other way as JSON lines the engine appends to ``progress_file``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloister.errors import JobInvalid, MalformedInput

JOB_ENV = "CLOISTER_JOB"
_DIRS = ("outputs_dir", "checkpoint_dir", "progress_file")


@dataclass(frozen=True)
class JobSpec:
    """Where an engine finds its inputs and parameters and where it writes outputs, checkpoints and progress."""

    inputs: Mapping[str, tuple[Path, ...]]
    params: Mapping[str, Any]
    outputs_dir: Path
    checkpoint_dir: Path
    progress_file: Path

    def to_json(self) -> bytes:
        """The ``job.json`` bytes, every path absolute."""
        body = {
            "inputs": {role: [str(Path(p).resolve()) for p in paths] for role, paths in sorted(self.inputs.items())},
            "params": dict(self.params),
            **{key: str(Path(getattr(self, key)).resolve()) for key in _DIRS},
        }
        return json.dumps(body, indent=1, sort_keys=True, allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: bytes, *, base: Path) -> JobSpec:
        """Parse ``job.json``; relative paths are taken relative to ``base`` (the folder holding the file)."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise JobInvalid(f"job.json is not valid JSON ({exc}); the loader must write it again") from None
        if not isinstance(raw, dict):
            raise JobInvalid("job.json must hold a JSON object")
        missing = sorted({"inputs", "params", *_DIRS} - set(raw))
        if missing:
            raise JobInvalid(f"job.json is missing {', '.join(missing)}")
        unknown = sorted(set(raw) - {"inputs", "params", *_DIRS})
        if unknown:
            raise JobInvalid(f"job.json has unknown key(s) {', '.join(unknown)}")
        inputs, params = raw["inputs"], raw["params"]
        if not isinstance(params, dict):
            raise JobInvalid("job.json 'params' must be an object of parameter names to values")
        if not isinstance(inputs, dict) or not all(
            isinstance(paths, list) and all(isinstance(p, str) and p for p in paths) for paths in inputs.values()
        ):
            raise JobInvalid("job.json 'inputs' must map each role to a list of file paths")
        for key in _DIRS:
            if not isinstance(raw[key], str) or not raw[key]:
                raise JobInvalid(f"job.json {key!r} must be a path")
        return cls(
            inputs={role: tuple(base / p for p in paths) for role, paths in inputs.items()},
            params=params,
            outputs_dir=base / raw["outputs_dir"],
            checkpoint_dir=base / raw["checkpoint_dir"],
            progress_file=base / raw["progress_file"],
        )

    @classmethod
    def load(cls, path: Path) -> JobSpec:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise JobInvalid(f"cannot read the job file {path}: {exc.strerror}") from None
        return cls.from_json(data, base=Path(path).resolve().parent)

    @classmethod
    def from_env(cls) -> JobSpec:
        """The job this engine process was started for."""
        path = os.environ.get(JOB_ENV)
        if not path:
            raise JobInvalid(f"{JOB_ENV} is not set; engines are started by the loader with a job.json")
        return cls.load(Path(path))


def append_progress(path: Path, entry: Mapping[str, Any]) -> None:
    """Add one progress line with a single ``write`` system call, so a kill cannot leave half an entry behind."""
    line = (json.dumps(dict(entry), sort_keys=True, allow_nan=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_progress(path: Path) -> list[dict[str, Any]]:
    """Every complete progress line so far; an unfinished last line (the engine was killed mid-write) is skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    entries = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise MalformedInput(f"line {number} of the progress file {path} is not JSON") from None
        if not isinstance(entry, dict):
            raise MalformedInput(f"line {number} of the progress file {path} is not a JSON object")
        entries.append(entry)
    return entries
