"""MANIFEST §3 RIM table and the v2.0.0 end-to-end set: signatures, chains, selection and measurement comparison."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from tests.attest.nvgpu.nvvectors import (
    DRIVER_RIM_TEST,
    NV,
    NVSDK_RIM_TIME,
    RIM_TIME,
    VBIOS_RIM_PROD,
    VBIOS_RIM_TEST,
    evidence,
    gpu,
    rim,
)
from tests.attest.vectors import read

from cloister.attest import nvgpu
from cloister.attest.checks import Check, Checklist
from cloister.attest.der import parse_pem_certificates
from cloister.attest.nvgpu.opaque import OpaqueData, parse_opaque
from cloister.attest.nvgpu.rim import NVDEC0_INDEX, select
from cloister.attest.nvgpu.spdm import Report, parse_report
from cloister.errors import CertificateInvalid, CollateralInvalid, EvidenceMalformed, PolicyViolation

V2 = ("nvtrust_v2.0.0_attestationReport.txt", "nvtrust_v2.0.0_gpuAkCertChain.txt")
SAD = ("nvsdk_sad_hopperAttestationReport.txt", "nvsdk_sad_hopperCertChain.txt")
DRIVER_535_MISMATCH = "nvsdk_NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml"
VBIOS_MISMATCH = "nvsdk_NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml"


def parsed(report_chain: tuple[str, str]) -> tuple[Report, OpaqueData]:
    report = parse_report(gpu(*report_chain).report)
    return report, parse_opaque(report.response.opaque)


def test_v2_all_33_active_measurements_match_the_test_rims() -> None:
    checklist = Checklist()
    claims = nvgpu.verify(
        evidence(*V2, DRIVER_RIM_TEST, VBIOS_RIM_TEST), nvgpu.VerifyOptions(now=RIM_TIME), checklist=checklist
    )
    gpu_claims = claims.gpus[0]
    assert gpu_claims.comparison is not None and gpu_claims.comparison.matched
    assert gpu_claims.measurements_matched is True and not gpu_claims.debug and not claims.debug
    assert len(gpu_claims.comparison.compared) + len(gpu_claims.comparison.skipped) == 33
    assert [(used.kind, used.version, used.manufacturer_id) for used in gpu_claims.rims] == [
        ("driver", "545.00", "5703"),
        ("vbios", "96.00.5E.00.01", "5703"),
    ]
    names = [c.name for c in checklist.items]
    assert names.count("rim_chain") == names.count("rim_signature") == 2 and "rim_select" in names
    nvgpu.validate(claims, nvgpu.Policy(), checklist=checklist)
    assert checklist.ok and {"measurements", "debug"} <= {c.name for c in checklist.items}


def test_v2_every_active_index_matches_even_the_one_nvdec0_skips() -> None:
    report, _ = parsed(V2)
    active = [g for name in (DRIVER_RIM_TEST, VBIOS_RIM_TEST) for g in nvgpu.parse_rim(rim(name)).active]
    assert len(active) == 33
    for golden in active:
        block = report.response.block(golden.index + 1)
        assert block is not None and block.value in golden.alternatives


def test_v2_with_the_prod_vbios_rim_mismatches_at_1_2_3_9() -> None:
    claims = nvgpu.verify(evidence(*V2, DRIVER_RIM_TEST, VBIOS_RIM_PROD), nvgpu.VerifyOptions(now=RIM_TIME))
    comparison = claims.gpus[0].comparison
    assert comparison is not None and not comparison.matched
    assert [(m.index, m.source) for m in comparison.mismatches] == [
        (1, "vbios"),
        (2, "vbios"),
        (3, "vbios"),
        (9, "vbios"),
    ]
    assert claims.debug
    with pytest.raises(PolicyViolation) as caught:
        nvgpu.validate(claims, nvgpu.Policy())
    assert caught.value.check == "measurements"
    assert "1 (vbios), 2 (vbios), 3 (vbios), 9 (vbios)" in caught.value.message
    with pytest.raises(PolicyViolation) as debug:
        nvgpu.validate(claims, nvgpu.Policy(require_rim_match=False))
    assert debug.value.check == "debug"
    nvgpu.validate(claims, nvgpu.Policy(require_rim_match=False, allow_debug=True))


def test_v2_rims_have_expired_by_now() -> None:
    checklist = Checklist()
    with pytest.raises(CertificateInvalid) as caught:
        nvgpu.verify(evidence(*V2, DRIVER_RIM_TEST, VBIOS_RIM_TEST), checklist=checklist)
    assert caught.value.check == "rim_chain"
    assert "expired" in caught.value.message
    assert checklist.items[-1] == Check("rim_chain", False, caught.value.message)


def test_nvsdk_driver_rim_verifies() -> None:
    verified = nvgpu.verify_rim(nvgpu.parse_rim(rim("nvsdk_NV_GPU_DRIVER_GH100_550.144.03.xml")), now=NVSDK_RIM_TIME)
    assert (verified.version, verified.manufacturer_id, verified.product) == ("550.144.03", "5703", "GH100")
    assert verified == nvgpu.parse_rim(rim("nvsdk_NV_GPU_DRIVER_GH100_550.144.03.xml"))


def test_nvsdk_driver_rim_under_the_incorrect_root_fails_its_chain() -> None:
    wrong = tuple(parse_pem_certificates(read(NV + "nvsdk_incorrect_rim_root.crt")))
    with pytest.raises(CertificateInvalid) as caught:
        nvgpu.verify_rim(
            nvgpu.parse_rim(rim("nvsdk_NV_GPU_DRIVER_GH100_550.144.03.xml")), roots=wrong, now=NVSDK_RIM_TIME
        )
    assert caught.value.check == "rim_chain"


def test_incorrect_signature_rim_is_rejected() -> None:
    with pytest.raises(CollateralInvalid) as caught:
        nvgpu.verify_rim(nvgpu.parse_rim(rim("nvsdk_incorrect_signature_driver_rim.xml")), now=NVSDK_RIM_TIME)
    assert caught.value.check == "rim_signature"


def test_incorrect_chain_rim_ends_at_a_debug_root() -> None:
    bad = nvgpu.parse_rim(rim("nvsdk_incorrect_cert_chain_driver_rim.xml"))
    when = datetime(2025, 6, 1, tzinfo=UTC)
    with pytest.raises(CertificateInvalid) as caught:
        nvgpu.verify_rim(bad, now=when)
    assert caught.value.check == "rim_chain"
    assert "CoRIM L1 Root CA Debug Only" in caught.value.message
    # Even trusting that debug root, the chain is broken: the signer was not issued by it.
    with pytest.raises(CertificateInvalid) as explicit:
        nvgpu.verify_rim(bad, roots=bad.certificates[-1:], now=when)
    assert "was not issued by" in explicit.value.message


def test_expired_rim() -> None:
    expired = nvgpu.parse_rim(rim("nvsdk_NV_GPU_DRIVER_GH100_570.124.03_expired.xml"))
    with pytest.raises(CertificateInvalid) as caught:
        nvgpu.verify_rim(expired, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert caught.value.check == "rim_chain" and "expired" in caught.value.message
    with pytest.raises(CollateralInvalid) as digest:  # inside its one-day window: the edited digest shows
        nvgpu.verify_rim(expired, now=datetime(2025, 1, 1, 12, tzinfo=UTC))
    assert digest.value.check == "rim_signature"


def test_sad_hopper_against_the_mismatch_rims() -> None:
    """The SDK test mocks its RIM store (no signature check) and expects measurements_matching = Failure."""
    report, opaque = parsed(SAD)
    driver, vbios = nvgpu.parse_rim(rim(DRIVER_535_MISMATCH)), nvgpu.parse_rim(rim(VBIOS_MISMATCH))
    assert select([driver, vbios], "GH100", opaque) == (driver, vbios)
    comparison = nvgpu.compare(report, opaque, driver, vbios)
    assert not comparison.matched
    assert 9 in [m.index for m in comparison.mismatches if m.source == "vbios"]
    # Verified for real, the edited driver RIM fails its signature; the VBIOS one is genuine.
    when = datetime(2025, 6, 1, tzinfo=UTC)
    with pytest.raises(CollateralInvalid) as caught:
        nvgpu.verify(evidence(*SAD, DRIVER_535_MISMATCH, VBIOS_MISMATCH), nvgpu.VerifyOptions(now=when))
    assert caught.value.check == "rim_signature" and "535.86.09" in caught.value.message
    assert nvgpu.verify_rim(vbios, now=when) == vbios


def test_a_tampered_golden_value_breaks_the_signature() -> None:
    xml = rim(DRIVER_RIM_TEST)
    original = nvgpu.parse_rim(xml).active[0].alternatives[0].hex()
    tampered = nvgpu.parse_rim(xml.replace(original.encode(), b"0" * len(original), 1))
    assert tampered.active[0].alternatives[0] != bytes.fromhex(original)
    with pytest.raises(CollateralInvalid) as caught:
        nvgpu.verify_rim(tampered, now=RIM_TIME)
    assert caught.value.check == "rim_signature"


def test_two_different_rims_for_one_version_are_ambiguous() -> None:
    with pytest.raises(CollateralInvalid) as caught:
        nvgpu.verify(evidence(*V2, DRIVER_RIM_TEST, VBIOS_RIM_TEST, VBIOS_RIM_PROD), nvgpu.VerifyOptions(now=RIM_TIME))
    assert caught.value.check == "rim_select" and "2 different ones" in caught.value.message
    assert "NV_GPU_VBIOS_1010_0200_882_96005E0001" in caught.value.message


def test_the_same_rim_twice_is_one_rim() -> None:
    claims = nvgpu.verify(
        evidence(*V2, DRIVER_RIM_TEST, VBIOS_RIM_TEST, DRIVER_RIM_TEST), nvgpu.VerifyOptions(now=RIM_TIME)
    )
    assert claims.gpus[0].measurements_matched


def test_overlapping_rims_conflict() -> None:
    report, opaque = parsed(V2)
    vbios = nvgpu.parse_rim(rim(VBIOS_RIM_TEST))
    with pytest.raises(CollateralInvalid) as caught:
        nvgpu.compare(report, opaque, vbios, vbios)
    assert caught.value.check == "rim_conflict"


def _with_nvdec0(opaque: OpaqueData, status: int) -> OpaqueData:
    fields = tuple((kind, bytes([status]) if kind == 11 else value) for kind, value in opaque.fields)
    return replace(opaque, fields=fields, nvdec0_status=status)


def test_nvdec0_measurement_is_compared_only_while_nvdec0_is_enabled() -> None:
    report, opaque = parsed(V2)
    xml = rim(DRIVER_RIM_TEST)
    (golden,) = [g for g in nvgpu.parse_rim(xml).active if g.index == NVDEC0_INDEX]
    for value in golden.alternatives:
        xml = xml.replace(value.hex().encode(), b"ab" * len(value))
    driver, vbios = nvgpu.parse_rim(xml), nvgpu.parse_rim(rim(VBIOS_RIM_TEST))
    disabled = nvgpu.compare(report, opaque, driver, vbios)
    assert opaque.nvdec0_status == 0x55 and disabled.matched and disabled.skipped == (NVDEC0_INDEX,)
    enabled = nvgpu.compare(report, _with_nvdec0(opaque, 0xAA), driver, vbios)
    assert [m.index for m in enabled.mismatches] == [NVDEC0_INDEX] and not enabled.skipped
    with pytest.raises(EvidenceMalformed):
        nvgpu.compare(report, _with_nvdec0(opaque, 0x11), driver, vbios)


def test_missing_block_is_a_mismatch() -> None:
    report, opaque = parsed(V2)
    driver, vbios = nvgpu.parse_rim(rim(DRIVER_RIM_TEST)), nvgpu.parse_rim(rim(VBIOS_RIM_TEST))
    first = driver.active[0].index
    fewer = replace(report.response, blocks=tuple(b for b in report.response.blocks if b.index != first + 1))
    comparison = nvgpu.compare(replace(report, response=fewer), opaque, driver, vbios)
    assert [(m.index, m.actual) for m in comparison.mismatches] == [(first, None)]


def test_a_malformed_rim_in_the_evidence_is_refused() -> None:
    with pytest.raises(EvidenceMalformed) as caught:
        nvgpu.verify(nvgpu.Evidence(evidence(*V2).gpus, (b"<nope",)))
    assert caught.value.check == "rim" and caught.value.message.startswith("RIM #0")


DRIVER = rim(DRIVER_RIM_TEST)


@pytest.mark.parametrize(
    ("name", "xml"),
    [
        ("not XML", b"\x00\x01"),
        ("doctype", b'<!DOCTYPE x [<!ENTITY a "b">]>' + DRIVER),
        (
            "doctype in UTF-16",
            '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'.encode("utf-16"),
        ),
        ("wrong root", b"<SoftwareIdentity/>"),
        ("no Meta", DRIVER.replace(b"<ns0:Meta ", b"<ns0:Other ", 1)),
        ("bad active", DRIVER.replace(b'active="True"', b'active="yes"', 1)),
        ("bad index", DRIVER.replace(b'index="7"', b'index="x7"', 1)),
        ("index twice", DRIVER.replace(b'index="7"', b'index="6"', 1)),
        ("hash not hex", DRIVER.replace(b'ns2:Hash0="0e0e', b'ns2:Hash0="zz0e', 1)),
        ("hash too short", DRIVER.replace(b'ns2:Hash0="0e0e', b'ns2:Hash0="0e', 1)),
        ("no alternatives attribute", DRIVER.replace(b' alternatives="1"', b"", 1)),
        ("missing Hash1", DRIVER.replace(b'alternatives="1"', b'alternatives="2"', 1)),
        ("unsigned", DRIVER[: DRIVER.index(b"<ds:Signature")] + b"</SoftwareIdentity>"),
        ("certificate not base64", DRIVER.replace(b"<ds:X509Certificate>", b"<ds:X509Certificate>!", 1)),
        ("certificate not DER", DRIVER.replace(b"<ds:X509Certificate>MII", b"<ds:X509Certificate>AAA", 1)),
    ],
)
def test_malformed_rims_are_refused(name: str, xml: bytes) -> None:
    with pytest.raises(EvidenceMalformed):
        nvgpu.parse_rim(xml)
