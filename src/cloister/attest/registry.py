"""The attestation platforms by name, imported on first use, so callers depend on the uniform API only.

Every platform package (``cloister.attest.<name>``) exposes ``PLATFORM``, ``Evidence`` (``from_json``,
``from_files``, ``to_json``), ``VerifyOptions(now=, roots=)``, ``verify``, ``Claims``, ``Policy.from_toml`` and
``validate``. What the registry adds is what the composite TCB must know without importing anything: which
evidence slot (CPU or GPU) a platform can fill, and whether it is simulated.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol, cast

from cloister.attest.checks import Checklist
from cloister.attest.der import Certificate
from cloister.errors import ConfigError

CPU: Final = "cpu"
GPU: Final = "gpu"


@dataclass(frozen=True)
class PlatformInfo:
    name: str
    module: str
    roles: frozenset[str]
    """Which TCB slots the platform's evidence may fill: ``cpu`` (binds report data), ``gpu`` (binds a nonce)."""
    simulated: bool
    """Its roots are not a hardware vendor's: only a policy that allows simulation accepts it."""


KNOWN: dict[str, PlatformInfo] = {
    info.name: info
    for info in (
        PlatformInfo("snp", "cloister.attest.snp", frozenset({CPU}), simulated=False),
        PlatformInfo("tdx", "cloister.attest.tdx", frozenset({CPU}), simulated=False),
        PlatformInfo("nvgpu", "cloister.attest.nvgpu", frozenset({GPU}), simulated=False),
        PlatformInfo("sim", "cloister.attest.sim", frozenset({CPU, GPU}), simulated=True),
    )
}
_REQUIRED: Final = ("PLATFORM", "Evidence", "VerifyOptions", "verify", "Claims", "Policy", "validate")


class PlatformClaims(Protocol):
    """What the composite TCB reads from any platform's claims."""

    @property
    def platform(self) -> str: ...
    @property
    def report_data(self) -> bytes: ...
    @property
    def measurement(self) -> str: ...
    @property
    def debug(self) -> bool: ...
    def to_json(self) -> dict[str, Any]: ...


class EvidenceCodec(Protocol):
    def from_json(self, data: dict[str, Any], /) -> object: ...
    def from_files(
        self,
        path: Path,
        /,
        *,
        certs: Path | None = None,
        collateral: Path | None = None,
        rims: Path | None = None,
    ) -> object: ...


class PolicyClass(Protocol):
    """A platform's ``Policy``: its defaults, or its table of an appraisal policy."""

    def __call__(self) -> object: ...
    def from_toml(self, table: dict[str, Any], /) -> object: ...


class PlatformModule(Protocol):
    """The uniform API of a platform package, as the CLI and the composite TCB call it."""

    PLATFORM: str
    Evidence: EvidenceCodec
    VerifyOptions: type[Any]
    """A frozen dataclass taking at least ``now`` and ``roots``."""
    Policy: PolicyClass

    def verify(
        self, evidence: Any, options: Any = None, /, *, checklist: Checklist | None = None
    ) -> PlatformClaims: ...

    def validate(self, claims: Any, policy: Any, /, *, checklist: Checklist | None = None) -> None: ...


def info(name: str) -> PlatformInfo:
    """What is known about platform ``name`` without importing it."""
    found = KNOWN.get(name)
    if found is None:
        raise ConfigError(f"unknown attestation platform {name!r}; use one of {', '.join(sorted(KNOWN))}")
    return found


def platform(name: str) -> PlatformModule:
    """The platform package for ``name``, imported now; a platform not built into this install is a ConfigError."""
    known = info(name)
    try:
        module = importlib.import_module(known.module)
    except ModuleNotFoundError as exc:
        if exc.name != known.module:
            raise ConfigError(
                f"attestation platform {name!r} needs the Python module {exc.name!r}, which is not installed; "
                "install it into Cloister's environment"
            ) from exc
        raise ConfigError(
            f"attestation platform {name!r} is not available in this installation ({known.module} is missing); "
            "upgrade Cloister or leave the platform out of the policy"
        ) from None
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing:
        raise ConfigError(
            f"attestation platform {name!r} is not available yet: {known.module} lacks {', '.join(missing)}"
        )
    if name != module.PLATFORM:
        raise ConfigError(f"{known.module} says it is platform {module.PLATFORM!r}, not {name!r}; reinstall Cloister")
    return cast(PlatformModule, module)


def verify(
    name: str,
    evidence_json: dict[str, Any],
    *,
    now: datetime,
    roots: tuple[Certificate, ...] | None,
    checklist: Checklist,
) -> PlatformClaims:
    """Parse a platform's evidence JSON and verify it: the one call the composite TCB makes per evidence."""
    with checklist.run("platform", name):
        module = platform(name)
    with checklist.run("evidence"):
        evidence = module.Evidence.from_json(evidence_json)
    return module.verify(evidence, module.VerifyOptions(now=now, roots=roots), checklist=checklist)
