"""MANIFEST §3: every NVIDIA report, chain and evidence list gives exactly the stated outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from tests.attest.nvgpu.nvvectors import (
    DRIVER_RIM_TEST,
    NONCE_931D,
    NV,
    VALID,
    VBIOS_RIM_PROD,
    Pair,
    evidence,
    evidence_list,
    gpu,
    rim,
)
from tests.attest.vectors import read

from cloister.attest import nvgpu
from cloister.attest.checks import Checklist
from cloister.attest.der import parse_pem_certificates
from cloister.attest.nvgpu.device import OID_DICE_TCB_INFO, parse_fwid
from cloister.attest.nvgpu.opaque import parse_opaque
from cloister.attest.nvgpu.spdm import SIGNATURE_SIZE, parse_report
from cloister.attest.roots import NVIDIA_CORIM_SIGNING_ROOT_CA, NVIDIA_DEVICE_IDENTITY_CA, fingerprint
from cloister.errors import CertificateInvalid, CollateralInvalid, StaleEvidence, VerificationFailed


@pytest.mark.parametrize("pair", VALID, ids=lambda pair: pair.report)
def test_valid_reports_verify_with_the_stated_fields(pair: Pair) -> None:
    checklist = Checklist()
    claims = nvgpu.verify(evidence(pair.report, pair.chain), checklist=checklist)
    (gpu_claims,) = claims.gpus
    assert checklist.ok
    assert [c.name for c in checklist.items][:3] == ["spdm", "device_chain", "report_signature"]
    assert claims.platform == "nvgpu"
    assert claims.report_data.hex() == gpu_claims.nonce.hex() == pair.nonce
    assert gpu_claims.driver_version == pair.driver
    assert gpu_claims.vbios_version == pair.vbios
    assert (gpu_claims.fwid.hex() if gpu_claims.fwid else None) == pair.fwid
    assert gpu_claims.oem_id == "5703"
    assert gpu_claims.comparison is None and gpu_claims.debug  # no RIMs: production firmware is unproven
    assert ("fwid" in [c.name for c in checklist.items]) == (pair.fwid is not None)


@pytest.mark.parametrize("pair", VALID, ids=lambda pair: pair.report)
def test_the_expected_nonce_is_checked(pair: Pair) -> None:
    nonce = bytes.fromhex(pair.nonce)
    checklist = Checklist()
    nvgpu.verify(evidence(pair.report, pair.chain), nvgpu.VerifyOptions(expected_nonce=nonce), checklist=checklist)
    assert "nonce" in [c.name for c in checklist.items]
    with pytest.raises(StaleEvidence) as caught:
        nvgpu.verify(evidence(pair.report, pair.chain), nvgpu.VerifyOptions(expected_nonce=bytes(32)))
    assert caught.value.check == "nonce"


def test_nvtrust_hopper_matches_trustee_expected_claims() -> None:
    """trustee's hopperAttestationReport-claims.txt is the exact claim set for nvtrust's report."""
    expected = json.loads(read(NV + "trustee_hopperAttestationReport-claims.txt"))
    claims = nvgpu.verify(evidence("nvtrust_hopperAttestationReport.txt", "nvtrust_hopperCertChain.txt")).gpus[0]
    config = expected["config"]
    opaque = dict(claims.opaque)

    def text(name: str) -> str:
        return bytes.fromhex(opaque[name]).split(b"\x00", 1)[0].decode()

    assert claims.arch == expected["arch"].upper()
    assert claims.driver_version == config["driver_version"]
    assert claims.vbios_version.lower() == config["vbios_version"]
    assert claims.fwid is not None and claims.fwid.hex() == config["fwid"]
    hex_fields = [("board_id", "BOARD_ID"), ("cpr_info", "CPRINFO"), ("gpu_info", "GPU_INFO")]
    for field, name in [*hex_fields, ("project_sku_mod", "PROJECT_SKU_MOD")]:  # trustee shows these in hex
        assert opaque[name] == config[field]
    for field, name in [
        ("chip_sku", "CHIP_SKU"),
        ("chip_sku_mod", "CHIP_SKU_MOD"),
        ("project", "PROJECT"),
        ("project_sku", "PROJECT_SKU"),
        ("nvdec0_status", "NVDEC0_STATUS"),
        ("protected_pcie_status", "PROTECTED_PCIE_STATUS"),
    ]:
        assert text(name) == config[field]
    report = parse_report(gpu("nvtrust_hopperAttestationReport.txt", "nvtrust_hopperCertChain.txt").report)
    counts = parse_opaque(report.response.opaque).measurement_counts
    assert {str(i + 1): count for i, count in enumerate(counts)} == config["measurement_count"]
    assert {str(block.index): block.value.hex() for block in claims.blocks} == expected["measurements"]


def test_nvtrust_hopper_does_not_match_the_repository_test_rims() -> None:
    claims = nvgpu.verify(evidence("nvtrust_hopperAttestationReport.txt", "nvtrust_hopperCertChain.txt"))
    pair = gpu("nvtrust_hopperAttestationReport.txt", "nvtrust_hopperCertChain.txt")
    report = parse_report(pair.report)
    comparison = nvgpu.compare(
        report,
        parse_opaque(report.response.opaque),
        nvgpu.parse_rim(rim(DRIVER_RIM_TEST)),
        nvgpu.parse_rim(rim(VBIOS_RIM_PROD)),
    )
    assert not comparison.matched
    assert claims.gpus[0].driver_version != "545.00"
    with pytest.raises(CollateralInvalid) as caught:
        nvgpu.verify(evidence("nvtrust_hopperAttestationReport.txt", "nvtrust_hopperCertChain.txt", DRIVER_RIM_TEST))
    assert caught.value.check == "rim_select"
    assert "NV_GPU_DRIVER_GH100_550.90.07" in caught.value.message


def test_nvsdk_default_claims() -> None:
    """attestation-sdk's expectations: ueid is the leaf serial in decimal, oem_id 5703, a GH100 device."""
    claims = nvgpu.verify(evidence("nvsdk_hopperAttestationReport.txt", "nvsdk_hopperCertChain.txt")).gpus[0]
    assert claims.ueid == "509096176156678437554566035365892618958504054724"
    assert claims.oem_id == "5703"
    assert claims.chip == "GH100"
    assert claims.hwmodel == "GH100 A01 GSP BROM"
    assert claims.arch == "HOPPER"


def test_blackwell_claims() -> None:
    claims = nvgpu.verify(evidence("nvsdk_sad_blackwellAttestationReport.txt", "nvsdk_sad_blackwellCertChain.txt"))
    gpu_claims = claims.gpus[0]
    assert gpu_claims.hwmodel == "GB100 A01 GSP BROM"
    assert gpu_claims.ueid == "474146966256510137525212816567191319424869109849"
    assert gpu_claims.arch == "BLACKWELL"
    assert gpu_claims.chip == "GB100"


def test_sad_hopper_with_a_zero_expected_nonce_is_stale() -> None:
    with pytest.raises(StaleEvidence) as caught:
        nvgpu.verify(
            evidence("nvsdk_sad_hopperAttestationReport.txt", "nvsdk_sad_hopperCertChain.txt"),
            nvgpu.VerifyOptions(expected_nonce=bytes(32)),
        )
    assert caught.value.check == "nonce"


def test_invalid_signature_report_is_rejected() -> None:
    checklist = Checklist()
    with pytest.raises(VerificationFailed) as caught:
        nvgpu.verify(
            evidence("nvsdk_sad_hopperAttestationReportInvalidSignature.txt", "nvsdk_sad_hopperCertChainExpired.txt"),
            checklist=checklist,
        )
    assert caught.value.check == "report_signature"
    assert checklist.items[-1].name == "report_signature" and not checklist.items[-1].passed
    assert [c.name for c in checklist.items if c.passed] == ["spdm", "device_chain"]


def test_expired_named_report_has_valid_device_certificates() -> None:
    claims = nvgpu.verify(
        evidence("nvsdk_sad_hopperAttestationReportExpired.txt", "nvsdk_sad_hopperCertChainExpired.txt")
    )
    assert claims.gpus[0].driver_version == "570.124.03"


@pytest.mark.parametrize(
    ("name", "nonce", "driver", "vbios", "count"),
    [
        (
            "nvsdk_evidence_hopper_590_12.json",
            "e97b23a1718095a0e9e35edca810768c70a6a5a389b705e753b197912bc11576",
            "590.12",
            "96.00.A5.00.01",
            1,
        ),
        (
            "nvsdk_serialized_hopper_evidence.json",
            "e97b23a1718095a0e9e35edca810768c70a6a5a389b705e753b197912bc11576",
            "590.12",
            "96.00.A5.00.01",
            1,
        ),
        ("nvsdk_serialized_hopper_evidence_cert_hold.json", NONCE_931D.hex(), "570.86.10", "96.00.AF.00.01", 1),
        (
            "nvtrust_gpu_evidence.json",
            "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e",
            "590.12",
            "96.00.A5.00.01",
            8,
        ),
    ],
)
def test_evidence_lists_verify(name: str, nonce: str, driver: str, vbios: str, count: int) -> None:
    checklist = Checklist()
    claims = nvgpu.verify(evidence_list(name), checklist=checklist)
    assert len(claims.gpus) == count
    assert claims.report_data.hex() == nonce
    assert {(g.driver_version, g.vbios_version) for g in claims.gpus} == {(driver, vbios)}
    assert len({g.ueid for g in claims.gpus}) == count
    assert all(g.fwid is not None for g in claims.gpus)
    assert [c.name for c in checklist.items].count("fwid") == count
    assert [c.name for c in checklist.items].count("nonce") == count  # each entry's declared nonce is signed
    assert [c.name for c in checklist.items].count("arch") == count


def test_trustee_report_has_one_byte_of_padding_after_the_signature() -> None:
    data = gpu("trustee_hopper_coco_report1.txt", "trustee_hopper_coco_certs1.txt").report
    report = parse_report(data)
    assert report.padding == 1
    assert data[-SIGNATURE_SIZE:] != report.response.signature  # a "last 96 bytes" parser reads the wrong bytes
    claims = nvgpu.verify(evidence("trustee_hopper_coco_report1.txt", "trustee_hopper_coco_certs1.txt"))
    assert claims.report_data.hex().startswith("87d8e24a") and claims.report_data.hex().endswith("6b343fec")


def test_trustee_case1_is_the_nvtrust_chain() -> None:
    assert read(NV + "trustee_hopper_cert_chain_case3.txt") != read(NV + "nvtrust_hopperCertChain.txt")
    assert parse_pem_certificates(read(NV + "trustee_hopper_signing_cert.pem"))[0].der == (
        parse_pem_certificates(read(NV + "nvtrust_hopperCertChain.txt"))[0].der
    )


@pytest.mark.parametrize(
    ("case", "check", "words"),
    [
        (2, "device_chain", "at least the signing certificate and the root CA"),
        (3, "device_chain", "was not issued by"),
        (4, "fwid", "no TCG DICE TcbInfo (FWID) extension"),
    ],
)
def test_trustee_broken_chains(case: int, check: str, words: str) -> None:
    """trustee: case2 root only, case3 an intermediate missing, case4 the leaf missing."""
    broken = evidence("nvtrust_hopperAttestationReport.txt", f"trustee_hopper_cert_chain_case{case}.txt")
    with pytest.raises(CertificateInvalid) as caught:
        nvgpu.verify(broken)
    assert caught.value.check == check
    assert words in caught.value.message


def test_trustee_signing_cert_fwid() -> None:
    (leaf,) = parse_pem_certificates(read(NV + "trustee_hopper_signing_cert.pem"))
    extension = leaf.extension(OID_DICE_TCB_INFO)
    assert extension is not None
    assert parse_fwid(extension.value).hex() == VALID[0].fwid


@pytest.mark.parametrize(
    ("name", "pinned"),
    [
        ("nvgpu/nvtrust_verifier_device_root.pem", NVIDIA_DEVICE_IDENTITY_CA),
        ("roots/nvidia_device_identity_ca.pem", NVIDIA_DEVICE_IDENTITY_CA),
        ("nvgpu/nvtrust_verifier_RIM_root.pem", NVIDIA_CORIM_SIGNING_ROOT_CA),
        ("roots/nvidia_corim_signing_root_ca.pem", NVIDIA_CORIM_SIGNING_ROOT_CA),
    ],
)
def test_roots_are_the_pinned_ones(name: str, pinned: str) -> None:
    (root,) = parse_pem_certificates(read(name))
    assert fingerprint(root) == pinned


def test_device_chains_are_valid_until_9999() -> None:
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    for pair in VALID:
        nvgpu.verify(evidence(pair.report, pair.chain), nvgpu.VerifyOptions(now=late))
