"""Validating sim claims: the [sim] policy table and each rule it enforces."""

from __future__ import annotations

from typing import Any

import pytest
from tests.attest.sim.fixtures import CPU_CHIP, GPU_CHIP, MEASUREMENT, OPTIONS, cpu_report, gpu_report

from cloister.attest import sim
from cloister.attest.checks import Checklist
from cloister.errors import ConfigError, PolicyViolation

CPU = sim.verify(CPU_CHIP.evidence(cpu_report()), OPTIONS)
DEBUG_CPU = sim.verify(CPU_CHIP.evidence(cpu_report(debug=True)), OPTIONS)
GPU = sim.verify(GPU_CHIP.evidence(gpu_report()), OPTIONS)


def test_defaults_refuse_debug_and_accept_any_measurement() -> None:
    assert sim.Policy.from_toml({}) == sim.Policy()
    checklist = Checklist()
    sim.validate(CPU, sim.Policy(), checklist=checklist)
    assert [(c.name, c.passed) for c in checklist.items] == [
        ("debug", True),
        ("minimum_tcb", True),
        ("measurement", True),
    ]
    with pytest.raises(PolicyViolation, match="debug enabled") as caught:
        sim.validate(DEBUG_CPU, sim.Policy())
    assert caught.value.check == "debug"
    sim.validate(DEBUG_CPU, sim.Policy(allow_debug=True))


def test_measurement_allow_list_covers_cpu_and_gpu_measurements() -> None:
    policy = sim.Policy.from_toml({"measurements": [MEASUREMENT.hex(), GPU.measurement]})
    sim.validate(CPU, policy)
    sim.validate(GPU, policy)
    checklist = Checklist()
    with pytest.raises(PolicyViolation, match="not in the policy's allow-list") as caught:
        sim.validate(CPU, sim.Policy(measurements=(GPU.measurement,)), checklist=checklist)
    assert caught.value.check == "measurement" and not checklist.ok


def test_minimum_tcb() -> None:
    sim.validate(CPU, sim.Policy(minimum_tcb=3))
    with pytest.raises(PolicyViolation, match="below the policy's minimum 4") as caught:
        sim.validate(CPU, sim.Policy(minimum_tcb=4))
    assert caught.value.check == "minimum_tcb"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"allow_debugging": True}, "unknown key"),
        ({"allow_debug": "no"}, "allow_debug"),
        ({"minimum_tcb": True}, "minimum_tcb"),
        ({"minimum_tcb": -1}, "minimum_tcb"),
        ({"minimum_tcb": 1 << 32}, "minimum_tcb"),
        ({"measurements": MEASUREMENT.hex()}, "measurements"),
        ({"measurements": [MEASUREMENT.hex().upper()]}, "measurements"),
        ({"measurements": ["ab" * 32]}, "measurements"),
    ],
)
def test_bad_tables_are_config_errors(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sim.Policy.from_toml(table)
