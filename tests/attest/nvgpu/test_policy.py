"""The nvgpu policy: safe defaults, the TOML table, and each rule passing and failing."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from tests.attest.nvgpu.nvvectors import DRIVER_RIM_TEST, RIM_TIME, VALID, VBIOS_RIM_TEST, evidence, evidence_list

from cloister.attest import nvgpu
from cloister.attest.checks import Checklist
from cloister.errors import ConfigError, PolicyViolation

RELAXED = {"require_rim_match": False, "allow_debug": True}
HOPPER = nvgpu.verify(evidence(VALID[0].report, VALID[0].chain))
"""nvtrust's H100: driver 550.90.07, VBIOS 96.00.9F.00.01, no RIMs."""

EXAMPLE = """
[nvgpu]
require_rim_match = true
allow_debug = false
hwmodels = ["GH100", "GB100 A01 GSP BROM"]
min_driver_version = "550.90.07"
min_vbios_version = "96.00.5E.00.01"
gpu_count = 1
"""


def test_defaults_are_safe() -> None:
    policy = nvgpu.Policy()
    assert policy == nvgpu.Policy.from_toml({})
    assert policy.require_rim_match and not policy.allow_debug
    with pytest.raises(PolicyViolation) as caught:
        nvgpu.validate(HOPPER, policy)
    assert caught.value.check == "measurements" and "no RIMs" in caught.value.message


def test_the_documented_example_parses() -> None:
    policy = nvgpu.Policy.from_toml(tomllib.loads(EXAMPLE)["nvgpu"])
    assert policy.hwmodels == ("GH100", "GB100 A01 GSP BROM") and policy.gpu_count == 1
    v2 = nvgpu.verify(
        evidence(VALID[1].report, VALID[1].chain, DRIVER_RIM_TEST, VBIOS_RIM_TEST), nvgpu.VerifyOptions(now=RIM_TIME)
    )
    with pytest.raises(PolicyViolation) as caught:  # the v2.0.0 set runs driver 545.00
        nvgpu.validate(v2, policy)
    assert caught.value.check == "driver_version"
    checklist = Checklist()
    nvgpu.validate(
        v2,
        nvgpu.Policy.from_toml({**tomllib.loads(EXAMPLE)["nvgpu"], "min_driver_version": "545"}),
        checklist=checklist,
    )
    assert [c.name for c in checklist.items] == [
        "gpu_count",
        "hwmodel",
        "driver_version",
        "vbios_version",
        "measurements",
        "debug",
    ]


@pytest.mark.parametrize(
    "table",
    [
        {"require_rim_match": "yes"},
        {"allow_debug": 1},
        {"hwmodels": "GH100"},
        {"hwmodels": [1]},
        {"driver_versions": "550.90.07"},
        {"min_driver_version": "abc"},
        {"min_driver_version": 550},
        {"min_vbios_version": "96.ZZ"},
        {"gpu_count": 0},
        {"gpu_count": True},
        {"gpu_count": "8"},
        {"debug": False},
    ],
)
def test_bad_policy_tables(table: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        nvgpu.Policy.from_toml(table)


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError, match="allow_debugging"):
        nvgpu.Policy.from_toml({"allow_debugging": True})


def test_debug_alone() -> None:
    with pytest.raises(PolicyViolation) as caught:
        nvgpu.validate(HOPPER, nvgpu.Policy(require_rim_match=False))
    assert caught.value.check == "debug" and caught.value.message.startswith("GPU 0 (GH100 A01 GSP BROM")
    nvgpu.validate(HOPPER, nvgpu.Policy(**RELAXED))


@pytest.mark.parametrize(
    ("rule", "passes", "check"),
    [
        ({"hwmodels": ("GH100",)}, True, "hwmodel"),
        ({"hwmodels": ("GH100 A01 GSP BROM",)}, True, "hwmodel"),
        ({"hwmodels": ("GB100",)}, False, "hwmodel"),
        ({"driver_versions": ("550.90.07",)}, True, "driver_version"),
        ({"driver_versions": ("550.90.08",)}, False, "driver_version"),
        ({"min_driver_version": "550.90.07"}, True, "driver_version"),
        ({"min_driver_version": "550.9"}, True, "driver_version"),
        ({"min_driver_version": "550.100"}, False, "driver_version"),
        ({"vbios_versions": ("96.00.9f.00.01",)}, True, "vbios_version"),
        ({"vbios_versions": ("96.00.5E.00.01",)}, False, "vbios_version"),
        ({"min_vbios_version": "96.00.9F.00.01"}, True, "vbios_version"),
        ({"min_vbios_version": "96.00.A0"}, False, "vbios_version"),
        ({"gpu_count": 1}, True, "gpu_count"),
        ({"gpu_count": 2}, False, "gpu_count"),
    ],
)
def test_rules(rule: dict[str, Any], passes: bool, check: str) -> None:
    policy = nvgpu.Policy(**RELAXED, **rule)
    checklist = Checklist()
    if passes:
        nvgpu.validate(HOPPER, policy, checklist=checklist)
        assert check in [c.name for c in checklist.items] and checklist.ok
    else:
        with pytest.raises(PolicyViolation) as caught:
            nvgpu.validate(HOPPER, policy, checklist=checklist)
        assert caught.value.check == check
        assert checklist.items[-1].name == check and not checklist.items[-1].passed


def test_every_gpu_is_checked() -> None:
    eight = nvgpu.verify(evidence_list("nvtrust_gpu_evidence.json"))
    nvgpu.validate(eight, nvgpu.Policy(**RELAXED, gpu_count=8, min_driver_version="590.12"))
    with pytest.raises(PolicyViolation) as caught:
        nvgpu.validate(eight, nvgpu.Policy(**RELAXED, gpu_count=7))
    assert caught.value.check == "gpu_count"
