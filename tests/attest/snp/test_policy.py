"""SEV-SNP validate: go-sev-guest's check_test good and bad values for attestation.bin (MANIFEST §1.1), TOML parsing
and the safe defaults."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from typing import Any

import pytest
from tests.attest.snp.snpvectors import valid_cases

from cloister.attest.checks import Checklist
from cloister.attest.snp import Claims, Policy, validate, verify
from cloister.errors import ConfigError, PolicyViolation

GOOD_TEMPLATE = """
allow_debug = true
allow_smt = true
report_data = "0102030405{zeros59}"
host_data = "{zeros32}"
measurements = ["b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"]
chip_ids = ["{chip}"]
minimum_tcb = 4901323769462652930
minimum_launch_tcb = 4901323769462652930
minimum_version = "1.49"
minimum_build = 0
require_author_key = false
require_id_block = false
vmpl = 0
platform_info = 1
"""
CHIP = (
    "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e5378618"
    "4ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d"
)
GOOD = GOOD_TEMPLATE.replace("{zeros59}", "00" * 59).replace("{zeros32}", "00" * 32).replace("{chip}", CHIP)


def _claims(name: str) -> Claims:
    case = next(case for case in valid_cases() if case.name == name)
    return verify(case.evidence, case.options)


@pytest.fixture(scope="module")
def gosev() -> Claims:
    return _claims("gosev")


def _table(**changes: Any) -> dict[str, Any]:
    return tomllib.loads(GOOD) | changes


def test_good_policy_passes_every_check(gosev: Claims) -> None:
    checklist = Checklist()
    validate(gosev, Policy.from_toml(_table()), checklist=checklist)
    assert checklist.ok
    names = [item.name for item in checklist.items]
    for name in (
        "debug",
        "smt",
        "report_data",
        "host_data",
        "measurement",
        "chip_id",
        "minimum_tcb",
        "minimum_launch_tcb",
        "minimum_version",
        "vmpl",
        "platform_info",
        "provisional_firmware",
    ):
        assert name in names


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"report_data": "0102030405" + "00" * 58 + "01"}, "report_data"),
        ({"host_data": "00" * 31 + "01"}, "host_data"),
        ({"measurements": ["00" * 48]}, "measurement"),
        ({"chip_ids": [CHIP[:-2] + "5e"]}, "chip_id"),
        ({"minimum_tcb": 4901323769462652931}, "minimum_tcb"),
        ({"minimum_launch_tcb": 4901323769462652931}, "minimum_launch_tcb"),
        ({"allow_debug": False, "allow_smt": False}, "debug"),
        ({"allow_debug": True, "allow_smt": False}, "smt"),
        ({"minimum_version": "1.50"}, "minimum_version"),
        ({"minimum_build": 90}, "minimum_build"),
        ({"require_author_key": True}, "author_key"),
        ({"require_id_block": True}, "id_block"),
        ({"vmpl": 1}, "vmpl"),
        ({"platform_info": 0}, "platform_info"),
        ({"minimum_tcb": {"snp": 6}}, "minimum_tcb"),
        ({"minimum_tcb": {"fmc": 0}}, "minimum_tcb"),
        ({"minimum_guest_svn": 1}, "guest_svn"),
        ({"require_single_socket": True}, "single_socket"),
    ],
)
def test_bad_values_are_violations(gosev: Claims, changes: dict[str, Any], check: str) -> None:
    checklist = Checklist()
    with pytest.raises(PolicyViolation) as caught:
        validate(gosev, Policy.from_toml(_table(**changes)), checklist=checklist)
    assert caught.value.check == check
    assert checklist.items[-1].name == check and not checklist.items[-1].passed


@pytest.mark.parametrize(
    "changes",
    [
        {"chip_ids": [CHIP + "00"]},
        {"minimum_build": 257},
        {"vmpl": 4},
        {"minimum_version": "1"},
        {"minimum_version": 1.5},
        {"allow_debug": "yes"},
        {"measurements": "b07a"},
        {"report_data": "zz"},
        {"minimum_tcb": {"ucode": 1}},
        {"minimum_tcb": -1},
        {"minimum_tcb": True},
        {"allow_everything": True},
    ],
)
def test_malformed_policies_are_config_errors(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"\[snp\] policy"):
        Policy.from_toml(_table(**changes))


def test_tcb_minimum_by_component(gosev: Claims) -> None:
    validate(gosev, Policy(allow_debug=True, minimum_tcb={"bootloader": 2, "snp": 5, "microcode": 68}))
    with pytest.raises(PolicyViolation, match="microcode 68 < 69"):
        validate(gosev, Policy(allow_debug=True, minimum_tcb={"microcode": 69}))


def test_default_policy_forbids_debug(gosev: Claims) -> None:
    with pytest.raises(PolicyViolation, match="debug") as caught:
        validate(gosev, Policy())
    assert caught.value.check == "debug"


@pytest.mark.parametrize("name", ["virtee", "trustee", "vlek", "genoa", "azure"])
def test_default_policy_accepts_production_guests(name: str) -> None:
    validate(_claims(name), Policy())


@pytest.mark.parametrize("name", ["trustee", "vlek", "azure"])
def test_provisional_firmware_can_be_refused(name: str) -> None:
    """These hosts run microcode newer than the committed TCB."""
    with pytest.raises(PolicyViolation) as caught:
        validate(_claims(name), Policy(permit_provisional_firmware=False))
    assert caught.value.check == "provisional_firmware"


def test_firmware_behind_its_committed_version_is_refused(gosev: Claims) -> None:
    report = gosev.report
    regressed = replace(gosev, report=replace(report, current_tcb=report.committed_tcb - (1 << 56)))
    with pytest.raises(PolicyViolation, match="below the committed") as caught:
        validate(regressed, Policy(allow_debug=True))
    assert caught.value.check == "provisional_firmware"


def test_vlek_vmpl() -> None:
    vlek = _claims("vlek")
    with pytest.raises(PolicyViolation) as caught:
        validate(vlek, Policy(vmpl=0))
    assert caught.value.check == "vmpl"
    validate(vlek, Policy(vmpl=1, platform_info=0x27))
