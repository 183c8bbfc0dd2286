"""Appraisal policies: which platforms are accepted in which TCB slot, and each platform's own rules.

A policy is a TOML file (``policies/devnet.toml`` and ``policies/production.toml`` ship with Cloister)::

    allow_simulated = false          # accept evidence from simulated platforms (sim): devnets only
    cpu_platforms = ["snp", "tdx"]   # platforms whose evidence may fill the CPU slot
    gpu_platforms = ["nvgpu"]        # platforms whose evidence may fill the GPU slot
    require_gpu = false              # refuse a TCB without GPU evidence

    [snp]                            # one table per listed platform, read by that platform's Policy.from_toml;
    ...                              # a listed platform without a table gets that Policy's (safe) defaults

Unknown keys are errors, and so is a table for a platform the lists do not name. The defaults of
:class:`AppraisalPolicy` are those of a real network: no simulation, SNP or TDX CPUs, NVIDIA GPUs optional.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

from cloister.attest import registry
from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.errors import ConfigError, MalformedInput

_TOP_LEVEL: Final = ("allow_simulated", "cpu_platforms", "gpu_platforms", "require_gpu")
PACKAGED: Final = ("devnet", "production")


def _flag(data: Mapping[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"policy field {name} must be true or false, not {value!r}")
    return value


def _names(data: Mapping[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = data.get(name, list(default))
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"policy field {name} must be a list of platform names, not {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class AppraisalPolicy:
    """What a verifier (the network, a content owner) accepts; construction checks it completely."""

    allow_simulated: bool = False
    cpu_platforms: tuple[str, ...] = ("snp", "tdx")
    gpu_platforms: tuple[str, ...] = ("nvgpu",)
    require_gpu: bool = False
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Each listed platform's own policy table, as written."""
    _rules: dict[str, object] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for slot, names in ((registry.CPU, self.cpu_platforms), (registry.GPU, self.gpu_platforms)):
            if len(set(names)) != len(names):
                raise ConfigError(f"{slot}_platforms lists a platform twice: {list(names)}")
            for name in names:
                if slot not in registry.info(name).roles:
                    raise ConfigError(
                        f"{name} evidence cannot fill the {slot.upper()} slot; remove it from {slot}_platforms"
                    )
        if self.require_gpu and not self.gpu_platforms:
            raise ConfigError("require_gpu = true needs at least one platform in gpu_platforms")
        listed = set(self.cpu_platforms) | set(self.gpu_platforms)
        rules: dict[str, object] = {}
        for name, table in self.tables.items():
            registry.info(name)
            if name not in listed:
                raise ConfigError(
                    f"the policy has a [{name}] table but {name} is in neither cpu_platforms nor gpu_platforms; "
                    "list the platform or drop its table"
                )
            rules[name] = registry.platform(name).Policy.from_toml(dict(table))
        try:
            canonical_json(self.to_json())
        except MalformedInput as exc:
            raise ConfigError(f"the policy has a value with no canonical form ({exc.message}); use integers") from None
        object.__setattr__(self, "_rules", rules)

    def rules(self, name: str) -> object:
        """Platform ``name``'s policy: its table, or that platform's defaults if the policy has none."""
        if name in self._rules:
            return self._rules[name]
        return registry.platform(name).Policy()

    def to_json(self) -> dict[str, Any]:
        """The policy in its TOML shape with every default spelled out; :meth:`from_json` reads it back."""
        return {
            "allow_simulated": self.allow_simulated,
            "cpu_platforms": list(self.cpu_platforms),
            "gpu_platforms": list(self.gpu_platforms),
            "require_gpu": self.require_gpu,
            **{name: dict(table) for name, table in sorted(self.tables.items())},
        }

    @property
    def digest(self) -> str:
        """``sha256:`` of the canonical JSON of :meth:`to_json`: names the exact policy a TCB was judged by."""
        return digest_bytes(canonical_json(self.to_json()))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AppraisalPolicy:
        if not isinstance(data, Mapping):
            raise ConfigError("an appraisal policy is a table (a JSON object)")
        tables: dict[str, Mapping[str, Any]] = {}
        for key, value in data.items():
            if key in _TOP_LEVEL:
                continue
            if key not in registry.KNOWN or not isinstance(value, Mapping):
                raise ConfigError(
                    f"unknown policy key {key!r}; use {', '.join(_TOP_LEVEL)} and one table per platform "
                    f"({', '.join(sorted(registry.KNOWN))})"
                )
            tables[key] = value
        return cls(
            allow_simulated=_flag(data, "allow_simulated", False),
            cpu_platforms=_names(data, "cpu_platforms", cls.cpu_platforms),
            gpu_platforms=_names(data, "gpu_platforms", cls.gpu_platforms),
            require_gpu=_flag(data, "require_gpu", False),
            tables=tables,
        )

    @classmethod
    def from_toml(cls, text: str) -> AppraisalPolicy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the policy is not valid TOML: {exc}") from None
        return cls.from_json(data)

    @classmethod
    def load(cls, path: Path) -> AppraisalPolicy:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the policy file {path}: {exc}") from None
        try:
            return cls.from_toml(text)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.message}") from None

    @classmethod
    def packaged(cls, name: str) -> AppraisalPolicy:
        """A policy shipped with Cloister: ``devnet`` or ``production``."""
        if name not in PACKAGED:
            raise ConfigError(f"no packaged policy {name!r}; use one of {', '.join(PACKAGED)} or a policy file")
        return cls.from_toml(resources.files("cloister.attest").joinpath(f"policies/{name}.toml").read_text())
