"""``engine.toml``: what an engine is called, how it starts, what it reads, writes and accepts as parameters.

The manifest is parsed once, strictly (unknown keys are refused, so a typo cannot silently drop a setting), into
frozen types. The same declarations check an order's hyper-parameters before a job starts and fill in defaults,
so the engine, the loader and the ledger agree on one set of parameter values.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from types import UnionType
from typing import Any

from cloister.errors import JobInvalid, ManifestInvalid

MANIFEST_NAME = "engine.toml"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_OUTPUT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

PARAM_TYPES = ("int", "float", "bool", "str", "list[str]", "list[object]")


def _is_type(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


@dataclass(frozen=True)
class Parameter:
    """One declared hyper-parameter; ``required`` ones have no default."""

    name: str
    type: str
    description: str
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None

    def check(self, value: Any) -> Any:
        """The value in its declared type (ints accepted for floats), or :class:`JobInvalid` saying what is wrong."""
        if not _is_type(value, self.type):
            raise JobInvalid(
                f"parameter {self.name!r} must be of type {self.type}, got {value!r}",
                parameter=self.name,
            )
        if self.type == "float":
            value = float(value)
        if self.minimum is not None and value < self.minimum:
            raise JobInvalid(f"parameter {self.name!r} must be >= {self.minimum}, got {value}", parameter=self.name)
        if self.maximum is not None and value > self.maximum:
            raise JobInvalid(f"parameter {self.name!r} must be <= {self.maximum}, got {value}", parameter=self.name)
        return value


@dataclass(frozen=True)
class InputRole:
    """A named kind of input (``model``, ``datasets``) and how many files of it a job must bring."""

    name: str
    description: str
    min_files: int = 1
    max_files: int | None = None


@dataclass(frozen=True)
class Resources:
    """Hints for placing a job; the engine is not stopped for exceeding them."""

    cpus: int = 1
    memory_mb: int = 1024
    gpus: int = 0


@dataclass(frozen=True)
class EngineManifest:
    """A parsed, validated ``engine.toml``."""

    name: str
    version: str
    entrypoint: str
    description: str
    inputs: Mapping[str, InputRole]
    outputs: Mapping[str, str]
    parameters: Mapping[str, Parameter]
    resources: Resources

    @property
    def entry_is_file(self) -> bool:
        """True when the entry point is a script path (``main.py``) rather than a module (``pkg.main``)."""
        return self.entrypoint.endswith(".py")

    def resolve_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``given`` against the declarations and fill in defaults; unknown names are refused."""
        unknown = sorted(set(given) - set(self.parameters))
        if unknown:
            raise JobInvalid(
                f"the {self.name} engine has no parameter(s) {', '.join(unknown)}; "
                f"it accepts: {', '.join(sorted(self.parameters))}",
                unknown=unknown,
            )
        resolved: dict[str, Any] = {}
        for name, param in self.parameters.items():
            if name in given:
                resolved[name] = param.check(given[name])
            elif param.required:
                raise JobInvalid(f"the {self.name} engine needs the parameter {name!r}", parameter=name)
            else:
                resolved[name] = param.default
        return resolved

    def check_inputs(self, inputs: Mapping[str, Sequence[object]]) -> None:
        """Refuse inputs for undeclared roles and roles with too few or too many files."""
        unknown = sorted(set(inputs) - set(self.inputs))
        if unknown:
            raise JobInvalid(
                f"the {self.name} engine has no input role(s) {', '.join(unknown)}; "
                f"it reads: {', '.join(sorted(self.inputs))}",
                unknown=unknown,
            )
        for role in self.inputs.values():
            count = len(inputs.get(role.name, ()))
            if count < role.min_files or (role.max_files is not None and count > role.max_files):
                most = "any number" if role.max_files is None else str(role.max_files)
                raise JobInvalid(
                    f"input {role.name!r} of the {self.name} engine takes {role.min_files} to {most} file(s), "
                    f"got {count}",
                    role=role.name,
                )


# --- parsing -------------------------------------------------------------------------------------------------


def _table(value: Any, where: str, allowed: Collection[str], required: Collection[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where} must be a table")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ManifestInvalid(f"{where} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(set(required) - set(value))
    if missing:
        raise ManifestInvalid(f"{where} is missing {', '.join(missing)}")
    return value


def _subtables(value: Any, where: str) -> dict[str, Any]:
    """A table of named tables (``[inputs.model]``, ``[parameters.lr]``); each entry is checked by its parser."""
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where} must be a table of tables")
    return value


def _typed(table: Mapping[str, Any], key: str, kind: type[Any] | UnionType, where: str, default: Any = None) -> Any:
    if key not in table:
        return default
    value = table[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise ManifestInvalid(f"{where}.{key} has the wrong type: {value!r}")
    return value


def _matching(value: str, pattern: re.Pattern[str], where: str, what: str) -> str:
    if not pattern.match(value):
        raise ManifestInvalid(f"{where} {value!r} is not a valid {what} (must match {pattern.pattern})")
    return value


def _entrypoint(value: str) -> str:
    if value.endswith(".py"):
        if PurePosixPath(value).is_absolute() or any(part in ("", ".", "..") for part in value.split("/")):
            raise ManifestInvalid(f"entrypoint {value!r} must be a path inside the bundle, like 'main.py'")
        return value
    if not all(part.isidentifier() for part in value.split(".")):
        raise ManifestInvalid(f"entrypoint {value!r} is neither a module path ('pkg.main') nor a script ('main.py')")
    return value


def _parameter(name: str, raw: Any) -> Parameter:
    where = f"[parameters.{name}]"
    _matching(name, _KEY_RE, "parameter name", "name")
    table = _table(raw, where, {"type", "default", "description", "min", "max"}, {"type", "description"})
    kind = _typed(table, "type", str, where)
    if kind not in PARAM_TYPES:
        raise ManifestInvalid(f"{where}.type {kind!r} is not one of {', '.join(PARAM_TYPES)}")
    bounds = {key: _typed(table, key, int | float, where) for key in ("min", "max")}
    if any(bound is not None for bound in bounds.values()) and kind not in ("int", "float"):
        raise ManifestInvalid(f"{where} has min/max but is of type {kind}; only numbers have bounds")
    param = Parameter(
        name=name,
        type=kind,
        description=_typed(table, "description", str, where),
        required="default" not in table,
        minimum=bounds["min"],
        maximum=bounds["max"],
    )
    if param.required:
        return param
    try:
        return replace(param, default=param.check(table["default"]))
    except JobInvalid as exc:
        raise ManifestInvalid(f"{where}.default is invalid: {exc.message}") from None


def _input_role(name: str, raw: Any) -> InputRole:
    where = f"[inputs.{name}]"
    _matching(name, _KEY_RE, "input role", "name")
    table = _table(raw, where, {"description", "min", "max"}, {"description"})
    low = _typed(table, "min", int, where, 1)
    high = _typed(table, "max", int, where)
    if low < 0 or (high is not None and high < max(low, 1)):
        raise ManifestInvalid(f"{where} needs 0 <= min <= max and max >= 1, got min={low} max={high}")
    return InputRole(name=name, description=_typed(table, "description", str, where), min_files=low, max_files=high)


def _output(name: str, raw: Any) -> str:
    where = f"[outputs.{name}]"
    _matching(name, _OUTPUT_RE, "output name", "file or folder name")
    return str(_typed(_table(raw, where, {"description"}, {"description"}), "description", str, where))


def _resources(raw: Any) -> Resources:
    table = _table(raw, "[resources]", {"cpus", "memory_mb", "gpus"})
    values = {key: _typed(table, key, int, "[resources]") for key in table}
    if any(value < 0 for value in values.values()):
        raise ManifestInvalid("[resources] values must not be negative")
    return Resources(**values)


def parse_manifest(text: str, *, source: str = MANIFEST_NAME) -> EngineManifest:
    """Parse and validate the text of an ``engine.toml``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestInvalid(f"{source} is not valid TOML: {exc}") from None
    top = _table(
        raw,
        source,
        {"name", "version", "entrypoint", "description", "inputs", "outputs", "parameters", "resources"},
        {"name", "version", "entrypoint", "inputs", "outputs"},
    )
    return EngineManifest(
        name=_matching(_typed(top, "name", str, source), _NAME_RE, "name", "engine name"),
        version=_matching(_typed(top, "version", str, source), _VERSION_RE, "version", "version"),
        entrypoint=_entrypoint(_typed(top, "entrypoint", str, source)),
        description=_typed(top, "description", str, source, ""),
        inputs={name: _input_role(name, value) for name, value in _subtables(top["inputs"], "[inputs]").items()},
        outputs={name: _output(name, value) for name, value in _subtables(top["outputs"], "[outputs]").items()},
        parameters={
            name: _parameter(name, value)
            for name, value in _subtables(top.get("parameters", {}), "[parameters]").items()
        },
        resources=_resources(top.get("resources", {})),
    )


def load_manifest(folder: Path) -> EngineManifest:
    """Read ``folder/engine.toml`` and check that its entry point exists in the folder."""
    path = Path(folder) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestInvalid(f"{folder} is not an engine: it has no {MANIFEST_NAME}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"cannot read {path}: {exc}") from None
    manifest = parse_manifest(text, source=str(path))
    if manifest.entry_is_file:
        candidates = [Path(folder) / manifest.entrypoint]
    else:
        module = Path(folder).joinpath(*manifest.entrypoint.split("."))
        candidates = [module.with_suffix(".py"), module / "__main__.py"]
    if not any(candidate.is_file() for candidate in candidates):
        raise ManifestInvalid(
            f"the entrypoint {manifest.entrypoint!r} of {path} is not in the bundle; "
            f"expected one of {', '.join(str(c.relative_to(folder)) for c in candidates)}"
        )
    return manifest
