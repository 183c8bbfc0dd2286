"""Every SEV-SNP vector of MANIFEST §1 gives the outcome the manifest states."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from tests.attest.snp.snpvectors import GOSEV_TIME, Valid, ark, evidence, valid_cases
from tests.attest.vectors import read, vector

from cloister.attest.checks import Checklist
from cloister.attest.der import parse_certificate, parse_pem_certificates
from cloister.attest.pki import verify_chain
from cloister.attest.roots import AMD_ARKS, fingerprint
from cloister.attest.snp import Claims, Evidence, VerifyOptions, verify
from cloister.attest.snp.certs import OID_HWID, endorsement_key
from cloister.attest.snp.product import Product
from cloister.attest.snp.report import Tcb
from cloister.errors import (
    AttestationError,
    CertificateInvalid,
    EvidenceMalformed,
    StaleEvidence,
    VerificationFailed,
)

GOSEV_MEASUREMENT = "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
GOSEV_CHIP = bytes.fromhex(
    "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea4"
    "64cdce40c05f63c9b610c5068b006b5d"
)
MILAN_TCB = 0x7308000000000003  # BL 3, TEE 0, SNP 8, uCode 115


def _case(name: str) -> Valid:
    return next(case for case in valid_cases() if case.name == name)


def _verify(case: Valid, **changes: object) -> Claims:
    return verify(case.evidence, replace(case.options, **changes))  # type: ignore[arg-type]


def _mutated(case: Valid, offset: int, change: Callable[[int], int]) -> Evidence:
    report = bytearray(case.evidence.report)
    report[offset] = change(report[offset])
    return replace(case.evidence, report=bytes(report))


def _cert_mutated(case: Valid, index: int, offset: int, change: Callable[[int], int]) -> Evidence:
    certificates = list(case.evidence.certificates)
    der = bytearray(certificates[index])
    der[offset] = change(der[offset])
    certificates[index] = bytes(der)
    return replace(case.evidence, certificates=tuple(certificates))


def _fails(evidence: Evidence, options: VerifyOptions, kind: type[AttestationError], check: str) -> AttestationError:
    checklist = Checklist()
    with pytest.raises(kind) as caught:
        verify(evidence, options, checklist=checklist)
    assert caught.value.check == check
    assert checklist.items[-1].name == check and not checklist.items[-1].passed
    return caught.value


# --- 1.1 go-sev-guest attestation.bin ---------------------------------------------------------------------------


def test_gosev_report_fields() -> None:
    checklist = Checklist()
    claims = verify(_case("gosev").evidence, _case("gosev").options, checklist=checklist)
    report = claims.report
    assert [item.name for item in checklist.items] == [
        "report_format",
        "vcek_chain",
        "vcek_tcb",
        "vcek_hwid",
        "report_signature",
    ]
    assert checklist.ok
    assert (report.version, report.guest_svn, report.policy.raw, report.vmpl) == (2, 0, 0xB0000, 0)
    assert (report.signature_algo, report.platform_info, report.signing_key) == (1, 1, "VCEK")
    assert not report.author_key_en and not report.mask_chip_key
    assert report.policy.smt and report.policy.debug and claims.debug
    assert claims.report_data == bytes.fromhex("0102030405") + bytes(59)
    assert claims.measurement == GOSEV_MEASUREMENT
    for name in ("host_data", "family_id", "image_id", "id_key_digest", "author_key_digest"):
        assert not any(getattr(report, name))
    assert report.report_id.hex() == "8edc638e1857c555d21f6b11bda3c8b1b5a09dba4852b4c8ee7aa2f16f22cc0a"
    assert report.report_id_ma == b"\xff" * 32
    assert report.chip_id == GOSEV_CHIP
    for raw in (report.current_tcb, report.reported_tcb, report.committed_tcb, report.launch_tcb):
        assert raw == 0x4405000000000002 == 4901323769462652930
    assert claims.reported_tcb.components() == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    assert str(report.current_version) == "1.49 build 3"
    assert report.cpuid is None
    assert str(claims.product) == "Milan-B0" and claims.signer == "VCEK"
    assert claims.root == fingerprint(ark("milan")[0])
    assert claims.to_json()["reported_tcb"] == {
        "raw": 4901323769462652930,
        "bootloader": 2,
        "tee": 0,
        "snp": 5,
        "microcode": 68,
    }


def test_gosev_vcek_extensions() -> None:
    key = endorsement_key(parse_certificate(read("snp/gosev_vcek.testcer")))
    assert key.kind == "VCEK" and key.product == Product("Milan", "B0")
    assert dict(key.spls) == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    assert key.hwid == GOSEV_CHIP
    assert key.certificate.serial == 0


def test_gosev_product_stepping_is_checked() -> None:
    case = _case("gosev")
    assert str(_verify(case, product="Milan-B0").product) == "Milan-B0"
    assert str(_verify(case, product="Milan").product) == "Milan-B0"
    with pytest.raises(VerificationFailed, match="expected product stepping B12, got B0") as caught:
        _verify(case, product="Milan-B12")
    assert caught.value.check == "product"
    with pytest.raises(VerificationFailed, match="Genoa") as caught:
        _verify(case, product="Genoa")
    assert caught.value.check == "product"
    with pytest.raises(EvidenceMalformed):
        _verify(case, product="Naples")


def test_gosev_vcek_validity_window() -> None:
    case = _case("gosev")
    _verify(case, now=datetime(2022, 9, 24, 0, 55, 28, tzinfo=UTC))
    _verify(case, now=datetime(2029, 9, 24, 0, 55, 28, tzinfo=UTC))
    for now, words in (
        (datetime(2022, 9, 24, 0, 55, 27, tzinfo=UTC), "not valid until"),
        (datetime(2029, 9, 24, 0, 55, 29, tzinfo=UTC), "expired"),
    ):
        error = _fails(case.evidence, replace(case.options, now=now), CertificateInvalid, "vcek_chain")
        assert words in error.message and error.details["reason"] == "validity"


def test_pinned_roots_are_found_among_the_carried_certificates() -> None:
    case = _case("gosev")
    claims = verify(case.evidence, VerifyOptions(now=GOSEV_TIME))
    assert claims.root in AMD_ARKS


# --- 1.3 the KDS cert_chain bundles and 4 the roots ------------------------------------------------------------


@pytest.mark.parametrize(
    ("bundle", "ask_name", "product"),
    [
        ("gosev_ask_ark_milan.pem", "SEV-Milan", "milan"),
        ("gosev_ask_ark_genoa.pem", "SEV-Genoa", "genoa"),
        ("gosev_ask_ark_turin_vcek.pem", "SEV-Turin", "turin"),
        ("gosev_ask_ark_milan_vlek.pem", "SEV-VLEK-Milan", "milan"),
        ("gosev_ask_ark_genoa_vlek.pem", "SEV-VLEK-Genoa", "genoa"),
        ("gosev_ask_ark_turin_vlek.pem", "SEV-VLEK-Turin", "turin"),
    ],
)
def test_kds_bundles_chain_to_the_pinned_ark(bundle: str, ask_name: str, product: str) -> None:
    ask, bundled_ark = parse_pem_certificates(read(f"snp/{bundle}"))
    (root,) = ark(product)
    assert ask.subject.common_name == ask_name
    assert bundled_ark.der == root.der and fingerprint(root) in AMD_ARKS
    assert verify_chain([ask], [root], now=datetime(2030, 1, 1, tzinfo=UTC)).der == root.der
    other = ark("genoa" if product != "genoa" else "milan")
    with pytest.raises(CertificateInvalid):
        verify_chain([ask], other, now=datetime(2030, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("product", ["milan", "genoa", "turin"])
def test_virtee_builtin_anchors_are_the_same_certificates(product: str) -> None:
    (virtee_ark,) = parse_pem_certificates(read(f"snp/virtee_{product}_ark.pem"))
    (virtee_ask,) = parse_pem_certificates(read(f"snp/virtee_{product}_ask.pem"))
    name = "turin_vcek" if product == "turin" else product
    assert [virtee_ask.der, virtee_ark.der] == [
        c.der for c in parse_pem_certificates(read(f"snp/gosev_ask_ark_{name}.pem"))
    ]
    assert virtee_ark.der == ark(product)[0].der


# --- 1.4 virtee -----------------------------------------------------------------------------------------------


def test_virtee_report_fields_and_hex_original() -> None:
    case = _case("virtee")
    claims = verify(case.evidence, case.options)
    report = claims.report
    assert (report.version, report.policy.raw, report.vmpl) == (2, 0x30000, 0)
    assert not claims.debug
    assert claims.report_data.hex() == (
        "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b7"
        "9fecb3d1cd82bd6a93ebfd"
    )
    assert claims.measurement == (
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
    )
    assert report.chip_id.hex().startswith("d49554ec717f4e5b") and report.chip_id.hex().endswith("4d541eb6")
    for raw in (report.current_tcb, report.reported_tcb, report.committed_tcb, report.launch_tcb):
        assert raw == MILAN_TCB
    assert claims.reported_tcb.components() == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    assert str(report.current_version) == "1.52 build 4"
    from_hex = Evidence.from_files(vector("snp/virtee_report_milan.hex"), certs=vector("snp/virtee_vcek_milan.der"))
    assert from_hex.report == read("snp/virtee_report_milan.bin")


def test_virtee_report_invalid_bit_flip() -> None:
    case = _case("virtee")
    _fails(_mutated(case, 21, lambda b: b ^ 0x80), case.options, VerificationFailed, "report_signature")


def test_virtee_chain_invalid() -> None:
    case = _case("virtee")
    error = _fails(_cert_mutated(case, 0, 40, lambda b: b ^ 0xFF), case.options, EvidenceMalformed, "vcek_chain")
    assert "malformed" in error.message


def test_vcek_signed_by_another_ask_fails_the_chain() -> None:
    """A flipped byte inside the VCEK's public key still parses, but the ASK's signature no longer matches."""
    case = _case("virtee")
    vcek = parse_certificate(case.evidence.certificates[0])
    offset = case.evidence.certificates[0].index(vcek.public_key_info) + 40
    error = _fails(_cert_mutated(case, 0, offset, lambda b: b ^ 0x01), case.options, CertificateInvalid, "vcek_chain")
    assert error.details["reason"] == "chain"


def test_virtee_turin_vcek() -> None:
    vcek = parse_certificate(read("snp/virtee_vcek_turin.der"))
    key = endorsement_key(vcek)
    assert key.hwid == bytes.fromhex("1e550a8ee5cf9f4d")
    assert key.product == Product("Turin") and key.product.turin_layout
    assert dict(key.spls) == {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 9, "fmc": 0}
    ask, turin_ark = parse_pem_certificates(read("snp/gosev_ask_ark_turin_vcek.pem"))
    assert verify_chain([vcek, ask], ark("turin"), now=datetime(2025, 1, 1, tzinfo=UTC)).der == turin_ark.der
    with pytest.raises(CertificateInvalid, match="not valid until"):
        verify_chain([vcek, ask], ark("turin"), now=datetime(2024, 11, 6, tzinfo=UTC))


# --- 1.5 trustee ----------------------------------------------------------------------------------------------


def test_trustee_report_binds_the_reported_not_the_current_tcb() -> None:
    case = _case("trustee")
    claims = verify(case.evidence, case.options)
    report = claims.report
    assert (report.version, report.guest_svn, report.policy.raw, report.vmpl) == (2, 4, 0x3001F, 0)
    assert claims.report_data == bytes.fromhex(
        "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2"
    ) + bytes(32)
    assert claims.measurement == (
        "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c"
    )
    assert report.chip_id.hex().startswith("c38427a3") and report.chip_id.hex().endswith("e477524e")
    assert report.reported_tcb == report.committed_tcb == report.launch_tcb == MILAN_TCB
    assert report.current_tcb == 0xCE08000000000003
    assert claims.tcb(report.current_tcb).microcode == 206


def test_trustee_mutations() -> None:
    case = _case("trustee")
    _fails(_mutated(case, 42, lambda b: (b + 1) % 256), case.options, VerificationFailed, "report_signature")
    error = _fails(_mutated(case, 0x180, lambda b: (b + 1) % 256), case.options, VerificationFailed, "vcek_tcb")
    assert "bootloader 3 != 4" in error.message and "kdsintf.amd.com/vcek/v1/Milan/" in error.message
    _fails(_cert_mutated(case, 0, 42, lambda b: (b + 1) % 256), case.options, EvidenceMalformed, "vcek_chain")


@pytest.mark.parametrize("name", ["trustee_test-vcek-invalid-legacy.der", "trustee_test-vcek-invalid-new.der"])
def test_trustee_synthetic_vceks_parse_but_fail_the_chain(name: str) -> None:
    key = endorsement_key(parse_certificate(read(f"snp/{name}")))
    assert key.hwid == bytes(range(64))
    case = _case("trustee")
    forged = evidence("snp/trustee_test-report.bin", f"snp/{name}", "snp/gosev_ask_ark_milan.pem")
    error = _fails(forged, case.options, CertificateInvalid, "vcek_chain")
    assert "signature" in error.message


def test_wrapped_and_raw_hwid_encodings_are_both_read() -> None:
    """The legacy certificate carries the 64 bytes raw, the new one wraps them in an OCTET STRING."""
    legacy = parse_certificate(read("snp/trustee_test-vcek-invalid-legacy.der")).extension(OID_HWID)
    new = parse_certificate(read("snp/trustee_test-vcek-invalid-new.der")).extension(OID_HWID)
    assert legacy is not None and legacy.value == bytes(range(64))
    assert new is not None and new.value == b"\x04\x40" + bytes(range(64))


def test_vlek_report() -> None:
    case = _case("vlek")
    checklist = Checklist()
    claims = verify(case.evidence, case.options, checklist=checklist)
    report = claims.report
    assert "vcek_hwid" not in [item.name for item in checklist.items]
    assert claims.signer == "VLEK" and report.signing_key == "VLEK"
    assert (report.version, report.vmpl, report.policy.raw, report.platform_info) == (3, 1, 0x30000, 0x27)
    assert not any(report.chip_id)
    assert report.cpuid == (0x19, 0x01, 0x01) and claims.product == Product("Milan")
    assert report.reported_tcb == 0xD918000000000004
    assert claims.reported_tcb.components() == {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 217}
    assert claims.tcb(report.current_tcb).microcode == 220
    assert claims.tcb(report.committed_tcb).microcode == claims.tcb(report.launch_tcb).microcode == 219
    assert claims.report_data.hex().startswith("819770b7") and claims.report_data.hex().endswith("a7bc27ca")
    assert claims.measurement.startswith("8922ebbd") and claims.measurement.endswith("570d7bf0")
    assert endorsement_key(parse_certificate(read("snp/trustee_test-vlek.der"))).csp_id is not None


@pytest.mark.parametrize(
    ("now", "words"),
    [(datetime(2024, 12, 10, tzinfo=UTC), "not valid until"), (datetime(2025, 12, 11, tzinfo=UTC), "expired")],
)
def test_vlek_outside_its_window(now: datetime, words: str) -> None:
    case = _case("vlek")
    error = _fails(case.evidence, replace(case.options, now=now), CertificateInvalid, "vcek_chain")
    assert words in error.message


def test_vlek_mutations() -> None:
    case = _case("vlek")
    _fails(_mutated(case, 42, lambda b: (b + 1) % 256), case.options, VerificationFailed, "report_signature")
    _fails(_mutated(case, 0x180, lambda b: (b + 1) % 256), case.options, VerificationFailed, "vcek_tcb")


def test_vlek_needs_the_asvk_not_the_ask() -> None:
    case = _case("vlek")
    with_ask = evidence("snp/trustee_test-vlek-report.bin", "snp/trustee_test-vlek.der", "snp/gosev_ask_ark_milan.pem")
    error = _fails(with_ask, case.options, CertificateInvalid, "vcek_chain")
    assert "SEV-VLEK-Milan" in error.message


# --- 1.6 trustee e2e JSON (Genoa) -----------------------------------------------------------------------------


def test_trustee_json_evidence() -> None:
    loaded = Evidence.from_files(
        vector("snp/trustee_e2e_snp_evidence.json"), certs=vector("snp/gosev_ask_ark_genoa.pem")
    )
    assert loaded.report == read("snp/trustee_e2e_snp_report_RECONSTRUCTED.bin")
    assert loaded.certificates[0] == read("snp/trustee_e2e_snp_vcek_extracted.der")
    claims = verify(loaded, VerifyOptions(now=datetime(2026, 1, 1, tzinfo=UTC)))
    assert claims.product == Product("Genoa") and claims.report.cpuid == (0x19, 0xA0, 0x02)
    assert claims.report.version == 3
    assert claims.reported_tcb.components() == {"bootloader": 10, "tee": 0, "snp": 23, "microcode": 25}
    assert str(claims.report.current_version) == "1.55 build 40"
    assert claims.measurement == (
        "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e"
    )
    assert claims.report_data.hex().startswith("7e7320889600c7ac") and claims.report_data.hex().endswith("150cf9b0")


def test_genoa_vcek_is_not_valid_before_issue() -> None:
    case = _case("genoa")
    _fails(
        case.evidence, replace(case.options, now=datetime(2025, 5, 27, tzinfo=UTC)), CertificateInvalid, "vcek_chain"
    )


def test_genoa_report_against_milan_root_fails() -> None:
    case = _case("genoa")
    error = _fails(case.evidence, replace(case.options, roots=ark("milan")), CertificateInvalid, "vcek_chain")
    assert "ARK-Genoa" in error.message


def test_milan_report_against_genoa_and_turin_roots_fails() -> None:
    case = _case("gosev")
    _fails(case.evidence, replace(case.options, roots=ark("genoa") + ark("turin")), CertificateInvalid, "vcek_chain")


def test_chain_missing_the_ask() -> None:
    case = _case("gosev")
    without_ask = evidence("snp/gosev_attestation.bin", "snp/gosev_vcek.testcer")
    error = _fails(without_ask, case.options, CertificateInvalid, "vcek_chain")
    assert "cert_chain" in error.message


def test_missing_vcek_names_the_kds_url() -> None:
    case = _case("gosev")
    error = _fails(
        evidence("snp/gosev_attestation.bin", "snp/gosev_ask_ark_milan.pem"),
        case.options,
        CertificateInvalid,
        "vcek_chain",
    )
    assert f"{GOSEV_CHIP.hex()}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68" in error.message


def test_vcek_of_another_chip_fails_the_hwid_check() -> None:
    """trustee's VCEK has the same TCB as virtee's report but belongs to another chip."""
    case = _case("virtee")
    other = evidence("snp/virtee_report_milan.bin", "snp/trustee_test-vcek.der", "snp/gosev_ask_ark_milan.pem")
    error = _fails(other, case.options, VerificationFailed, "vcek_hwid")
    assert "d49554ec" in error.message


# --- 1.7 Azure HCL --------------------------------------------------------------------------------------------


def test_azure_hcl_report() -> None:
    case = _case("azure")
    claims = verify(case.evidence, case.options)
    assert (claims.report.version, claims.report.guest_svn) == (2, 5)
    assert claims.report.reported_tcb == MILAN_TCB
    assert claims.measurement.startswith("9ac48fca") and claims.measurement.endswith("6d17c315")
    assert claims.report_data[:32].hex().startswith("b3fbad65") and claims.report_data[:32].hex().endswith("556bafac")
    assert claims.hcl_runtime_data is not None
    assert hashlib.sha256(claims.hcl_runtime_data).digest() == claims.report_data[:32]
    assert claims.hcl_runtime_data.startswith(b'{"keys":[{"kid":"HCLAkPub"')


def test_azure_snp_version_mismatch() -> None:
    case = _case("azure")
    error = _fails(_mutated(case, 0x1A6, lambda b: 0), case.options, VerificationFailed, "vcek_tcb")
    assert "snp 8 != 0" in error.message


def test_azure_runtime_data_digest_mismatch() -> None:
    case = _case("azure")
    _fails(_mutated(case, 0x6E0, lambda b: (b + 1) % 256), case.options, VerificationFailed, "hcl_report_data")


# --- freshness ------------------------------------------------------------------------------------------------


def test_expected_nonce() -> None:
    case = _case("gosev")
    _verify(case, expected_nonce=bytes.fromhex("0102030405"))
    _verify(case, expected_nonce=bytes.fromhex("0102030405") + bytes(59))
    for stale in (bytes.fromhex("0102030406"), bytes.fromhex("01020304"), bytes(64)):
        error = _fails(case.evidence, replace(case.options, expected_nonce=stale), StaleEvidence, "nonce")
        assert "replay" in error.message
    _fails(case.evidence, replace(case.options, expected_nonce=bytes(65)), VerificationFailed, "nonce")


def test_tcb_layouts() -> None:
    milan = Tcb.decode(0x4405000000000002, turin=False)
    assert milan.components() == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    turin = Tcb.decode(0x4400000004030201, turin=True)
    assert turin.components() == {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 68}
    assert Tcb.encode(turin.components(), turin=True) == turin
    with pytest.raises(EvidenceMalformed):
        Tcb.encode({"fmc": 1}, turin=False)
