"""Policy on sim claims (the *validate* step): measurement allow-list, debug, minimum TCB version."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cloister.attest.checks import Checklist
from cloister.attest.sim.evidence import Claims
from cloister.attest.sim.report import MAX_TCB
from cloister.errors import ConfigError, PolicyViolation

_MEASUREMENT_RE = re.compile(r"^[0-9a-f]{96}$")


@dataclass(frozen=True)
class Policy:
    """The ``[sim]`` table of an appraisal policy. The defaults refuse debug reports and accept any measurement."""

    measurements: tuple[str, ...] = ()
    """Allowed measurements (96 lower-case hex digits: the CPU launch measurement, or a GPU's block digest);
    empty accepts any."""
    allow_debug: bool = False
    """Accept reports whose debug flag is set (a debuggable guest's memory is readable by the host)."""
    minimum_tcb: int = 0
    """Lowest acceptable TCB version."""

    @classmethod
    def from_toml(cls, table: dict[str, Any]) -> Policy:
        """Parse a ``[sim]`` table; unknown keys and ill-typed values are :class:`ConfigError`."""
        if not isinstance(table, dict):
            raise ConfigError("the [sim] policy must be a table")
        unknown = sorted(set(table) - {"measurements", "allow_debug", "minimum_tcb"})
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(unknown)} in the [sim] policy; use measurements, allow_debug, minimum_tcb"
            )
        measurements = table.get("measurements", [])
        if not isinstance(measurements, list) or not all(
            isinstance(m, str) and _MEASUREMENT_RE.match(m) for m in measurements
        ):
            raise ConfigError("[sim] measurements must be a list of 96 lower-case hex digits each")
        allow_debug = table.get("allow_debug", False)
        if not isinstance(allow_debug, bool):
            raise ConfigError("[sim] allow_debug must be true or false")
        minimum_tcb = table.get("minimum_tcb", 0)
        if isinstance(minimum_tcb, bool) or not isinstance(minimum_tcb, int) or not 0 <= minimum_tcb <= MAX_TCB:
            raise ConfigError(f"[sim] minimum_tcb must be an integer from 0 to {MAX_TCB}")
        return cls(tuple(measurements), allow_debug, minimum_tcb)


def validate(claims: Claims, policy: Policy, *, checklist: Checklist | None = None) -> None:
    """Raise :class:`PolicyViolation` naming the first rule the claims break; record each rule that holds."""
    checklist = checklist if checklist is not None else Checklist()
    if claims.debug and not policy.allow_debug:
        checklist.fail(
            PolicyViolation(
                f"the {claims.kind} report has debug enabled, which the policy forbids; launch without debug",
                check="debug",
            )
        )
    checklist.passed("debug", "debug enabled (allowed)" if claims.debug else "debug disabled")
    if claims.tcb_version < policy.minimum_tcb:
        checklist.fail(
            PolicyViolation(
                f"TCB version {claims.tcb_version} is below the policy's minimum {policy.minimum_tcb}; "
                "update the chip firmware",
                check="minimum_tcb",
            )
        )
    checklist.passed("minimum_tcb", f"{claims.tcb_version} >= {policy.minimum_tcb}")
    if policy.measurements and claims.measurement not in policy.measurements:
        checklist.fail(
            PolicyViolation(
                f"measurement {claims.measurement} is not in the policy's allow-list; "
                "run an approved image or add its measurement to the policy",
                check="measurement",
            )
        )
    checklist.passed("measurement", "in the allow-list" if policy.measurements else "any (no allow-list)")
