"""Validate verified GPU claims against a policy: firmware proven by RIMs, models and versions allowed.

The defaults are the safe ones: every active measurement must match NVIDIA's RIMs (which is also the only proof
that debug is off), any model and version is allowed until the policy narrows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from cloister.attest.checks import Checklist
from cloister.attest.nvgpu.claims import Claims, GpuClaims
from cloister.errors import ConfigError, PolicyViolation


def _version(text: str, base: int) -> tuple[int, ...] | None:
    """``550.90.07`` (decimal) or ``96.00.9F.00.01`` (hex) as comparable numbers; None if it is neither."""
    try:
        return tuple(int(part, base) for part in text.split("."))
    except ValueError:
        return None


@dataclass(frozen=True)
class Policy:
    """The ``[nvgpu]`` table of a policy file."""

    require_rim_match: bool = True
    """Every GPU must come with its driver and VBIOS RIMs, and all their active measurements must match."""
    allow_debug: bool = False
    """Accept GPUs whose firmware is not proven production (no RIMs, or a mismatch). Debug has no bit of its own."""
    hwmodels: tuple[str, ...] = ()
    """Allowed models, each a full ``hwmodel`` (``GH100 A01 GSP BROM``) or a chip (``GH100``); empty = any."""
    driver_versions: tuple[str, ...] = ()
    """Allowed driver versions, exactly; empty = any."""
    min_driver_version: str | None = None
    """Lowest driver version, compared number by number (``550.90.07``)."""
    vbios_versions: tuple[str, ...] = ()
    """Allowed VBIOS versions, exactly (case-insensitive); empty = any."""
    min_vbios_version: str | None = None
    """Lowest VBIOS version, compared field by field in hex (``96.00.9F.00.01``)."""
    gpu_count: int | None = None
    """Exactly this many distinct GPUs; None = any number."""

    @classmethod
    def from_toml(cls, table: dict[str, Any]) -> Policy:
        """Build from a parsed TOML table; unknown keys and wrong types are a :class:`ConfigError`."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(f"[nvgpu] policy: unknown keys {unknown}; known keys are {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in table.items():
            default = known[name].default
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, tuple):
                ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
                value = tuple(value) if ok else value
            elif name == "gpu_count":
                ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            else:
                ok = isinstance(value, str) and _version(value, 16 if "vbios" in name else 10) is not None
            if not ok:
                raise ConfigError(f"[nvgpu] policy: {name} = {value!r} has the wrong type or form; see the docs")
            values[name] = value
        return cls(**values)


def _versions(kind: str, actual: str, allowed: tuple[str, ...], minimum: str | None) -> None:
    if allowed and actual.upper() not in {version.upper() for version in allowed}:
        raise PolicyViolation(
            f"{kind} version {actual} is not among the allowed {list(allowed)}", check=f"{kind}_version"
        )
    if minimum is not None:
        base = 16 if kind == "vbios" else 10
        have, need = _version(actual, base), _version(minimum, base)
        if have is None or need is None or have < need:
            raise PolicyViolation(
                f"{kind} version {actual} is older than the minimum {minimum}; update it", check=f"{kind}_version"
            )


def _hwmodel(gpu: GpuClaims, policy: Policy) -> None:
    if gpu.hwmodel not in policy.hwmodels and gpu.chip not in policy.hwmodels:
        raise PolicyViolation(f"model {gpu.hwmodel} is not among the allowed {list(policy.hwmodels)}", check="hwmodel")


def _driver(gpu: GpuClaims, policy: Policy) -> None:
    _versions("driver", gpu.driver_version, policy.driver_versions, policy.min_driver_version)


def _vbios(gpu: GpuClaims, policy: Policy) -> None:
    _versions("vbios", gpu.vbios_version, policy.vbios_versions, policy.min_vbios_version)


def _measurements(gpu: GpuClaims, policy: Policy) -> None:
    if gpu.comparison is None:
        raise PolicyViolation(
            "no RIMs were given, so its firmware is unproven; pass its driver and VBIOS RIMs (--rims) or set "
            "require_rim_match = false",
            check="measurements",
        )
    if not gpu.comparison.matched:
        indices = ", ".join(f"{m.index} ({m.source})" for m in gpu.comparison.mismatches)
        raise PolicyViolation(
            f"measurements at RIM indices {indices} differ from NVIDIA's golden values: the GPU does not run the "
            "firmware those RIMs describe",
            check="measurements",
        )


def _debug(gpu: GpuClaims, policy: Policy) -> None:
    if gpu.debug:
        raise PolicyViolation(
            "not proven to run production firmware, so debug cannot be ruled out; give matching RIMs or set "
            "allow_debug = true",
            check="debug",
        )


_Rule = Callable[[GpuClaims, Policy], None]


def _rules(policy: Policy) -> list[tuple[str, _Rule, str]]:
    """The rules this policy enforces, with what passing them means."""
    rules: list[tuple[str, _Rule, str, bool]] = [
        ("hwmodel", _hwmodel, f"model among {list(policy.hwmodels)}", bool(policy.hwmodels)),
        (
            "driver_version",
            _driver,
            "driver version allowed",
            bool(policy.driver_versions or policy.min_driver_version),
        ),
        ("vbios_version", _vbios, "VBIOS version allowed", bool(policy.vbios_versions or policy.min_vbios_version)),
        ("measurements", _measurements, "all active measurements match the RIMs", policy.require_rim_match),
        ("debug", _debug, "production firmware (debug off)", not policy.allow_debug),
    ]
    return [(name, rule, detail) for name, rule, detail, enforced in rules if enforced]


def validate(claims: Claims, policy: Policy, *, checklist: Checklist | None = None) -> None:
    """Raise :class:`PolicyViolation` naming the first rule the verified claims break; record each rule passed."""
    checklist = checklist if checklist is not None else Checklist()
    if policy.gpu_count is not None:
        if len(claims.gpus) != policy.gpu_count:
            checklist.fail(
                PolicyViolation(
                    f"{len(claims.gpus)} GPUs attested, the policy wants {policy.gpu_count}", check="gpu_count"
                )
            )
        checklist.passed("gpu_count", f"{policy.gpu_count} GPUs")
    for name, rule, detail in _rules(policy):
        for index, gpu in enumerate(claims.gpus):
            try:
                rule(gpu, policy)
            except PolicyViolation as exc:
                checklist.fail(
                    PolicyViolation(f"GPU {index} ({gpu.hwmodel}, ueid {gpu.ueid}): {exc.message}", check=name)
                )
        checklist.passed(name, f"{len(claims.gpus)} GPU(s): {detail}")
